/* libFuzzer target: the tracing settings and the W3C traceparent reader.
 * The input is split at NUL bytes into the values of the OTEL_* variables
 * (in the order of `names`) and a traceparent. Whatever the bytes, parsing
 * ends, and what it reports is consistent: a parsed traceparent formats
 * back to its first 55 characters (lower-case, version 00), and accepted
 * settings have bounded, well-formed fields (header lines end in CRLF,
 * queue and batch within bounds, the sampler ratio within 0..1). */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

static const char *const names[] = {
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_TRACES_EXPORTER"};
#define NNAMES (sizeof(names) / sizeof(names[0]))
static char values[NNAMES + 1][MGOP_TRACE_ENV_MAX];

static const char *fuzz_getenv(const char *name) {
  for (size_t i = 0; i < NNAMES; i++)
    if (!strcmp(name, names[i])) return values[i][0] ? values[i] : NULL;
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct mgop_trace_cfg c;
  struct mgop_trace_ctx ctx;
  size_t at = 0;
  for (size_t i = 0; i <= NNAMES; i++) { /* NUL-separated values; the last one is the traceparent */
    size_t n = 0;
    while (at < size && data[at] && n < MGOP_TRACE_ENV_MAX - 1) values[i][n++] = (char)data[at++];
    values[i][n] = 0;
    while (at < size && data[at]) at++; /* the rest of an over-long value */
    at += at < size;
  }
  if (mgop_traceparent_parse(values[NNAMES], strlen(values[NNAMES]), &ctx) == MGOP_OK) {
    char out[56];
    mgop_traceparent_format(&ctx, out);
    if (!mgop_trace_ctx_valid(&ctx) || strncmp(out + 3, values[NNAMES] + 3, 49)) __builtin_trap();
  }
  if (mgop_trace_config(&c, fuzz_getenv, "0") == MGOP_OK && c.enabled) {
    size_t h = strlen(c.headers);
    if (h && (h < 2 || c.headers[h - 2] != '\r' || c.headers[h - 1] != '\n')) __builtin_trap();
    if (c.queue_max < 1 || c.queue_max > MGOP_TRACE_QUEUE_MAX || c.batch_max < 1 || c.batch_max > c.queue_max)
      __builtin_trap();
    if (!(c.ratio >= 0.0 && c.ratio <= 1.0) || !memchr(c.url, 0, sizeof(c.url))) __builtin_trap();
  }
  return 0;
}

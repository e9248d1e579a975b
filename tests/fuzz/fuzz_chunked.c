/* libFuzzer target: the chunked decoder, fed whole and split at a point the
 * input chooses; both ways must agree. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned char a[70000], b[70000];
  struct mgop_chunked d1, d2;
  size_t n1 = 0, n2 = 0, o = 0, split;
  long r1, r2;
  if (size < 1 || size > sizeof(a)) return 0;
  split = data[0] % size;
  data++, size--;
  memcpy(a, data, size);
  mgop_chunked_init(&d1);
  r1 = mgop_chunked_decode(&d1, a, size, a, &n1);
  memcpy(b, data, size);
  mgop_chunked_init(&d2);
  if (split > size) split = size;
  r2 = mgop_chunked_decode(&d2, b, split, b, &o);
  if (r2 >= 0 && (size_t)r2 == split && d2.state != MGOP_CH_DONE) {
    size_t o2 = 0;
    long r3 = mgop_chunked_decode(&d2, b + split, size - split, b + o, &o2);
    r2 = r3 < 0 ? r3 : r2 + r3;
    n2 = o + o2;
  } else {
    n2 = o;
  }
  if ((r1 < 0) != (r2 < 0)) __builtin_trap();
  if (r1 >= 0 && (r1 != r2 || n1 != n2 || memcmp(a, b, n1))) __builtin_trap();
  return 0;
}

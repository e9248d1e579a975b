// Command otlp-receiver is a minimal OTLP/HTTP trace receiver for the
// multigres-op integration tests.
//
// It accepts OTLP/HTTP requests with JSON encoding on POST /v1/traces and
// holds every request to two independent checks, both of which must pass:
//
//  1. A strict structural walk of the JSON against the OTLP protobuf JSON
//     mapping (opentelemetry-proto trace/v1, common/v1, resource/v1 and
//     collector/trace/v1): every key must be a known lowerCamelCase field of
//     its message and carry the right JSON type, ids must be lowercase hex,
//     enums must be in range, times must be ordered, and so on. Errors name
//     the JSON path, e.g.
//     "resourceSpans[0].scopeSpans[0].spans[3].kind: 7 is not a SpanKind (0..5)".
//  2. The OpenTelemetry Collector's own decoder,
//     ptrace.JSONUnmarshaler.UnmarshalTraces, with unknown fields disallowed.
//
// Accepted spans are appended, one JSON object per line, to the file named by
// -out; the reason for every rejected (4xx) request is appended as one line to
// the same name + ".rejects" and logged to stderr.
//
// Usage:
//
//	otlp-receiver -listen 127.0.0.1:0 -out SPANS_FILE -port-file PORT_FILE [-fail-first N]
//
// The chosen TCP port is written to PORT_FILE (digits and a newline, via a
// temporary file and a rename) once the socket is listening. With
// -fail-first N the first N POSTs to /v1/traces get 503 with "Retry-After: 1"
// and are not recorded, so a test can check that the exporter retries.
// SIGTERM or SIGINT stops the receiver with exit status 0.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// maxBody is the largest request body accepted; larger bodies get 413.
const maxBody = 4 << 20

// maxDepth bounds JSON nesting so a hostile body cannot exhaust the stack.
// Real OTLP requests nest about a dozen levels plus AnyValue nesting.
const maxDepth = 64

// ---------------------------------------------------------------------------
// Command line and process lifecycle
// ---------------------------------------------------------------------------

// options holds the parsed command line.
type options struct {
	listen    string
	out       string
	portFile  string
	failFirst int
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("otlp-receiver: ")
	opts := parseFlags()
	if err := run(opts); err != nil {
		log.Fatal(err)
	}
}

// parseFlags reads the command line and exits with status 2 on misuse.
func parseFlags() options {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:0", "TCP address to listen on")
	flag.StringVar(&o.out, "out", "", "file to append accepted spans to, one JSON line each (required)")
	flag.StringVar(&o.portFile, "port-file", "", "file to write the listening port to (required)")
	flag.IntVar(&o.failFirst, "fail-first", 0, "answer the first N POSTs with 503 and Retry-After: 1")
	flag.Parse()
	if o.out == "" || o.portFile == "" || o.failFirst < 0 || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	return o
}

// run opens the output files, listens, publishes the port and serves until
// SIGTERM or SIGINT, after which it returns nil (exit status 0).
func run(o options) error {
	srv, err := newServer(o)
	if err != nil {
		return err
	}
	defer srv.close()

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := writeFileAtomic(o.portFile, strconv.Itoa(port)+"\n"); err != nil {
		ln.Close()
		return err
	}
	log.Printf("listening on %s", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, ln, srv)
}

// serve runs the HTTP server on ln until ctx is cancelled, then shuts it down.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Printf("signal received, shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file next to path and renames
// it into place, so a reader polling for path never sees a partial file.
func writeFileAtomic(path, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".otlp-receiver-port-*")
	if err != nil {
		return err
	}
	_, werr := tmp.WriteString(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// ---------------------------------------------------------------------------
// HTTP handling
// ---------------------------------------------------------------------------

// server is the http.Handler; it owns the two append-only output files.
type server struct {
	failFirst int64        // how many POSTs to answer with 503
	posts     atomic.Int64 // POSTs to /v1/traces seen so far
	mu        sync.Mutex   // serialises writes to spans and rejects
	spans     *os.File     // accepted spans, one JSON object per line
	rejects   *os.File     // one reason per rejected request
}

// outcome is what handling one request produced: the HTTP status, the number
// of spans recorded, and for errors the reason sent back to the client.
type outcome struct {
	status int
	spans  int
	reason string
}

// newServer opens (creating if needed) the spans and rejects files for appending.
func newServer(o options) (*server, error) {
	const flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	spans, err := os.OpenFile(o.out, flags, 0o644)
	if err != nil {
		return nil, err
	}
	rejects, err := os.OpenFile(o.out+".rejects", flags, 0o644)
	if err != nil {
		spans.Close()
		return nil, err
	}
	return &server{failFirst: int64(o.failFirst), spans: spans, rejects: rejects}, nil
}

// close closes the output files.
func (s *server) close() {
	s.spans.Close()
	s.rejects.Close()
}

// ServeHTTP handles one request, answers it, and logs one line about it.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o := s.process(w, r)
	respond(w, o)
	if o.status >= 400 && o.status < 500 {
		s.appendLine(s.rejects, []byte(o.reason+"\n"))
	}
	if o.reason != "" {
		log.Printf("%d %s %s spans=%d reason: %s", o.status, r.Method, r.URL.Path, o.spans, o.reason)
	} else {
		log.Printf("%d %s %s spans=%d", o.status, r.Method, r.URL.Path, o.spans)
	}
}

// process runs the request through the checks in order and records the spans
// of a valid request.
func (s *server) process(w http.ResponseWriter, r *http.Request) outcome {
	if r.URL.Path != "/v1/traces" {
		return fail(http.StatusNotFound, "no such path %q (only /v1/traces)", r.URL.Path)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return fail(http.StatusMethodNotAllowed, "method %s not allowed on /v1/traces (only POST)", r.Method)
	}
	if n := s.posts.Add(1); n <= s.failFirst {
		w.Header().Set("Retry-After", "1")
		return fail(http.StatusServiceUnavailable, "simulated outage: POST %d of the first %d (-fail-first)", n, s.failFirst)
	}
	if reason := checkHeaders(r); reason != "" {
		return fail(http.StatusUnsupportedMediaType, "%s", reason)
	}
	body, o := readBody(w, r)
	if o.status != 0 {
		return o
	}
	td, err := validate(body)
	if err != nil {
		return fail(http.StatusBadRequest, "%s", oneLine(err.Error()))
	}
	if err := s.record(td); err != nil {
		return fail(http.StatusInternalServerError, "recording spans: %v", err)
	}
	return outcome{status: http.StatusOK, spans: td.SpanCount()}
}

// fail builds an error outcome.
func fail(status int, format string, args ...any) outcome {
	return outcome{status: status, reason: fmt.Sprintf(format, args...)}
}

// checkHeaders returns why the request's Content-Type or Content-Encoding is
// unacceptable, or "" when it is plain application/json.
func checkHeaders(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Sprintf("Content-Type %q is not application/json", ct)
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return fmt.Sprintf("Content-Encoding %q is not supported", ce)
	}
	return ""
}

// readBody reads the whole body, at most maxBody bytes; a non-zero status in
// the outcome means the body was refused.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, outcome) {
	if r.ContentLength > maxBody {
		return nil, fail(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds the %d byte limit", r.ContentLength, maxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, fail(http.StatusRequestEntityTooLarge, "body exceeds the %d byte limit", maxBody)
	}
	if err != nil {
		return nil, fail(http.StatusBadRequest, "reading body: %v", err)
	}
	return body, outcome{}
}

// respond writes the OTLP/HTTP answer: "{}" (an empty
// ExportTraceServiceResponse) on success, otherwise a google.rpc.Status.
func respond(w http.ResponseWriter, o outcome) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(o.status)
	if o.status == http.StatusOK {
		io.WriteString(w, "{}")
		return
	}
	body, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{rpcCode(o.status), o.reason})
	w.Write(body)
}

// rpcCode maps an HTTP status to the google.rpc.Code carried in the body.
func rpcCode(status int) int {
	switch status {
	case http.StatusNotFound:
		return 5 // NOT_FOUND
	case http.StatusMethodNotAllowed:
		return 12 // UNIMPLEMENTED
	case http.StatusRequestEntityTooLarge:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	case http.StatusInternalServerError:
		return 13 // INTERNAL
	default:
		return 3 // INVALID_ARGUMENT
	}
}

// oneLine flattens control characters (such as newlines quoted from the
// body in a decoder error) so a reason always fits on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// appendLine writes whole lines to f under the mutex, so that concurrent
// requests never interleave.
func (s *server) appendLine(f *os.File, lines []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := f.Write(lines)
	if err != nil {
		log.Printf("writing %s: %v", f.Name(), err)
	}
	return err
}

// ---------------------------------------------------------------------------
// Validation: both checks must pass
// ---------------------------------------------------------------------------

// validate runs the strict structural walk and then the collector's decoder,
// and returns the decoded traces when both accept the body.
func validate(body []byte) (ptrace.Traces, error) {
	tree, err := decodeStrict(body)
	if err != nil {
		return ptrace.Traces{}, err
	}
	if err := checkRequest(tree); err != nil {
		return ptrace.Traces{}, err
	}
	u := &ptrace.JSONUnmarshaler{DisallowUnknownFields: true}
	td, err := u.UnmarshalTraces(body)
	if err != nil {
		return ptrace.Traces{}, fmt.Errorf("collector decoder (ptrace.JSONUnmarshaler): %w", err)
	}
	return td, nil
}

// decodeStrict parses body as exactly one JSON value into map[string]any,
// []any, string, json.Number, bool and nil (json.Decoder with UseNumber, so
// 64-bit integers keep every digit). Unlike json.Unmarshal it rejects
// duplicate object keys and trailing data.
func decodeStrict(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	v, err := readValue(dec, "", 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: data after the top-level value")
	}
	return v, nil
}

// readValue reads one JSON value; path is where it sits, for error messages.
func readValue(dec *json.Decoder, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, pathErr(path, "JSON nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxErr(dec, path, err)
	}
	switch tok {
	case json.Delim('{'):
		return readObject(dec, path, depth)
	case json.Delim('['):
		return readArray(dec, path, depth)
	}
	return tok, nil
}

// readObject reads the members of an object whose '{' was already consumed.
func readObject(dec *json.Decoder, path string, depth int) (any, error) {
	obj := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxErr(dec, path, err)
		}
		key := tok.(string) // the decoder guarantees object keys are strings
		if _, dup := obj[key]; dup {
			return nil, pathErr(join(path, key), "duplicate key")
		}
		if obj[key], err = readValue(dec, join(path, key), depth+1); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, syntaxErr(dec, path, err)
	}
	return obj, nil
}

// readArray reads the elements of an array whose '[' was already consumed.
func readArray(dec *json.Decoder, path string, depth int) (any, error) {
	arr := []any{}
	for dec.More() {
		v, err := readValue(dec, index(path, len(arr)), depth+1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, syntaxErr(dec, path, err)
	}
	return arr, nil
}

// syntaxErr describes malformed JSON met while reading the value at path;
// running out of input is reported as such rather than as a bare "EOF".
func syntaxErr(dec *json.Decoder, path string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return pathErr(path, "invalid JSON at byte %d: %v", dec.InputOffset(), err)
}

// join and index build JSON paths such as resourceSpans[0].scopeSpans.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// pathErr formats an error that names the JSON path it is about.
func pathErr(path, format string, args ...any) error {
	if path == "" {
		path = "(root)"
	}
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------------------
// Structural walk: the OTLP messages
// ---------------------------------------------------------------------------

// checker validates the JSON value v found at path.
type checker func(path string, v any) error

// fields maps each lowerCamelCase JSON field name of a message to its checker.
type fields map[string]checker

// checkMessage checks that v is an object whose keys are all fields of the
// message called name, each with a valid value, and returns the object.
// Keys are visited in sorted order so error messages are deterministic.
func checkMessage(path, name string, v any, fs fields) (map[string]any, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, pathErr(path, "want an object (%s), got %s", name, describe(v))
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		check, known := fs[k]
		if !known {
			return nil, pathErr(join(path, k), "unknown field of %s%s", name, camelHint(k, fs))
		}
		if err := check(join(path, k), obj[k]); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// camelHint suggests the lowerCamelCase name for a snake_case key that
// matches a field (the OTLP/JSON spec requires lowerCamelCase names).
func camelHint(key string, fs fields) string {
	parts := strings.Split(key, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	if camel := strings.Join(parts, ""); camel != key && fs[camel] != nil {
		return fmt.Sprintf(" (OTLP/JSON requires lowerCamelCase: %q)", camel)
	}
	return ""
}

// repeated checks a JSON array whose every element passes elem.
func repeated(elem checker) checker {
	return func(path string, v any) error {
		arr, ok := v.([]any)
		if !ok {
			return pathErr(path, "want an array, got %s", describe(v))
		}
		for i, e := range arr {
			if err := elem(index(path, i), e); err != nil {
				return err
			}
		}
		return nil
	}
}

// require checks that every named field is present in obj.
func require(path string, obj map[string]any, names ...string) error {
	for _, n := range names {
		if _, ok := obj[n]; !ok {
			return pathErr(join(path, n), "required field is missing")
		}
	}
	return nil
}

// checkRequest checks an ExportTraceServiceRequest (collector/trace/v1).
func checkRequest(v any) error {
	_, err := checkMessage("", "ExportTraceServiceRequest", v, fields{
		"resourceSpans": repeated(checkResourceSpans),
	})
	return err
}

// checkResourceSpans checks a ResourceSpans (trace/v1).
func checkResourceSpans(path string, v any) error {
	_, err := checkMessage(path, "ResourceSpans", v, fields{
		"resource":   checkResource,
		"scopeSpans": repeated(checkScopeSpans),
		"schemaUrl":  isString,
	})
	return err
}

// checkResource checks a Resource (resource/v1).
func checkResource(path string, v any) error {
	_, err := checkMessage(path, "Resource", v, fields{
		"attributes":             checkAttributes,
		"droppedAttributesCount": isUint32,
	})
	return err
}

// checkScopeSpans checks a ScopeSpans (trace/v1).
func checkScopeSpans(path string, v any) error {
	_, err := checkMessage(path, "ScopeSpans", v, fields{
		"scope":     checkScope,
		"spans":     repeated(checkSpan),
		"schemaUrl": isString,
	})
	return err
}

// checkScope checks an InstrumentationScope (common/v1).
func checkScope(path string, v any) error {
	_, err := checkMessage(path, "InstrumentationScope", v, fields{
		"name":                   isString,
		"version":                isString,
		"attributes":             checkAttributes,
		"droppedAttributesCount": isUint32,
	})
	return err
}

// checkSpan checks a Span (trace/v1): field types first, then the rules
// that involve several fields or forbid the zero value.
func checkSpan(path string, v any) error {
	obj, err := checkMessage(path, "Span", v, fields{
		"traceId":                hexID("trace id", 16),
		"spanId":                 hexID("span id", 8),
		"traceState":             isString,
		"parentSpanId":           parentSpanID,
		"flags":                  isUint32,
		"name":                   isString,
		"kind":                   enum("SpanKind", 5),
		"startTimeUnixNano":      isFixed64,
		"endTimeUnixNano":        isFixed64,
		"attributes":             checkAttributes,
		"droppedAttributesCount": isUint32,
		"events":                 repeated(checkEvent),
		"droppedEventsCount":     isUint32,
		"links":                  repeated(checkLink),
		"droppedLinksCount":      isUint32,
		"status":                 checkStatus,
	})
	if err != nil {
		return err
	}
	if err := require(path, obj, "traceId", "spanId", "name", "startTimeUnixNano", "endTimeUnixNano"); err != nil {
		return err
	}
	if obj["name"] == "" {
		return pathErr(join(path, "name"), "span name is empty")
	}
	return checkTimes(path, obj)
}

// checkTimes enforces endTimeUnixNano >= startTimeUnixNano > 0 on a span
// whose two time fields are present and well-formed.
func checkTimes(path string, obj map[string]any) error {
	start := asUint64(obj["startTimeUnixNano"])
	end := asUint64(obj["endTimeUnixNano"])
	if start == 0 {
		return pathErr(join(path, "startTimeUnixNano"), "must be > 0")
	}
	if end < start {
		return pathErr(join(path, "endTimeUnixNano"), "%d is before startTimeUnixNano %d", end, start)
	}
	return nil
}

// checkEvent checks a Span.Event (trace/v1); it must have a name and a time.
func checkEvent(path string, v any) error {
	obj, err := checkMessage(path, "Span.Event", v, fields{
		"timeUnixNano":           isFixed64,
		"name":                   isString,
		"attributes":             checkAttributes,
		"droppedAttributesCount": isUint32,
	})
	if err != nil {
		return err
	}
	if err := require(path, obj, "timeUnixNano", "name"); err != nil {
		return err
	}
	if obj["name"] == "" {
		return pathErr(join(path, "name"), "event name is empty")
	}
	if asUint64(obj["timeUnixNano"]) == 0 {
		return pathErr(join(path, "timeUnixNano"), "must be > 0")
	}
	return nil
}

// checkLink checks a Span.Link (trace/v1); its ids follow the span's rules.
func checkLink(path string, v any) error {
	obj, err := checkMessage(path, "Span.Link", v, fields{
		"traceId":                hexID("trace id", 16),
		"spanId":                 hexID("span id", 8),
		"traceState":             isString,
		"attributes":             checkAttributes,
		"droppedAttributesCount": isUint32,
		"flags":                  isUint32,
	})
	if err != nil {
		return err
	}
	return require(path, obj, "traceId", "spanId")
}

// checkStatus checks a Status (trace/v1).
func checkStatus(path string, v any) error {
	_, err := checkMessage(path, "Status", v, fields{
		"message": isString,
		"code":    enum("StatusCode", 2),
	})
	return err
}

// checkAttributes checks a repeated KeyValue whose keys are non-empty and
// unique within the list (used for attributes and kvlistValue.values).
func checkAttributes(path string, v any) error {
	if err := repeated(checkKeyValue)(path, v); err != nil {
		return err
	}
	first := map[string]int{}
	for i, kv := range v.([]any) {
		key := kv.(map[string]any)["key"].(string)
		if j, dup := first[key]; dup {
			return pathErr(join(index(path, i), "key"), "duplicate attribute key %q (first at [%d])", key, j)
		}
		first[key] = i
	}
	return nil
}

// checkKeyValue checks a KeyValue (common/v1) with a non-empty key and a value.
func checkKeyValue(path string, v any) error {
	obj, err := checkMessage(path, "KeyValue", v, fields{
		"key":   isString,
		"value": checkAnyValue,
	})
	if err != nil {
		return err
	}
	if err := require(path, obj, "key", "value"); err != nil {
		return err
	}
	if obj["key"] == "" {
		return pathErr(join(path, "key"), "attribute key is empty")
	}
	return nil
}

// checkAnyValue checks an AnyValue (common/v1): exactly one member of the
// "value" oneof must be set.
func checkAnyValue(path string, v any) error {
	obj, err := checkMessage(path, "AnyValue", v, fields{
		"stringValue": isString,
		"boolValue":   isBool,
		"intValue":    isInt64,
		"doubleValue": isDouble,
		"arrayValue":  checkArrayValue,
		"kvlistValue": checkKeyValueList,
		"bytesValue":  isBytes,
	})
	if err != nil {
		return err
	}
	if len(obj) != 1 {
		return pathErr(path, "AnyValue must set exactly one of stringValue, boolValue, intValue, doubleValue, arrayValue, kvlistValue, bytesValue; it sets %d", len(obj))
	}
	return nil
}

// checkArrayValue checks an ArrayValue (common/v1).
func checkArrayValue(path string, v any) error {
	_, err := checkMessage(path, "ArrayValue", v, fields{"values": repeated(checkAnyValue)})
	return err
}

// checkKeyValueList checks a KeyValueList (common/v1); keys must be unique.
func checkKeyValueList(path string, v any) error {
	_, err := checkMessage(path, "KeyValueList", v, fields{"values": checkAttributes})
	return err
}

// ---------------------------------------------------------------------------
// Structural walk: scalar fields
// ---------------------------------------------------------------------------

var (
	uintDigits = regexp.MustCompile(`^[0-9]+$`)
	intDigits  = regexp.MustCompile(`^-?[0-9]+$`)
)

// describe renders a decoded JSON value for an error message.
func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		if len(t) > 40 {
			t = t[:40] + "..."
		}
		return fmt.Sprintf("string %q", t)
	case json.Number:
		return "number " + t.String()
	case bool:
		return fmt.Sprintf("bool %t", t)
	case []any:
		return "an array"
	default:
		return "an object"
	}
}

// isString accepts a JSON string.
func isString(path string, v any) error {
	if _, ok := v.(string); !ok {
		return pathErr(path, "want a string, got %s", describe(v))
	}
	return nil
}

// isBool accepts a JSON boolean.
func isBool(path string, v any) error {
	if _, ok := v.(bool); !ok {
		return pathErr(path, "want a bool, got %s", describe(v))
	}
	return nil
}

// isUint32 accepts a JSON integer number in 0..2^32-1 (flags, dropped counts).
func isUint32(path string, v any) error {
	n, ok := v.(json.Number)
	if !ok {
		return pathErr(path, "want an integer number (uint32), got %s", describe(v))
	}
	if _, err := strconv.ParseUint(n.String(), 10, 32); err != nil {
		return pathErr(path, "%s is not a uint32", n)
	}
	return nil
}

// isDouble accepts a JSON number that fits a float64. The protobuf JSON mapping would also allow
// the strings "NaN" and "Infinity"; they are refused here because they cannot
// be written back out as JSON numbers.
func isDouble(path string, v any) error {
	n, ok := v.(json.Number)
	if !ok {
		return pathErr(path, "want a number (double), got %s", describe(v))
	}
	if _, err := strconv.ParseFloat(n.String(), 64); err != nil {
		return pathErr(path, "%s is out of range for double", n)
	}
	return nil
}

// isFixed64 accepts a fixed64 (the times): a JSON string of decimal digits
// or a JSON integer number, in 0..2^64-1.
func isFixed64(path string, v any) error {
	return int64Text(path, v, "fixed64", uintDigits, func(s string) error {
		_, err := strconv.ParseUint(s, 10, 64)
		return err
	})
}

// isInt64 accepts an int64 (intValue): a JSON string of decimal digits with
// an optional minus sign, or a JSON integer number, in int64 range.
func isInt64(path string, v any) error {
	return int64Text(path, v, "int64", intDigits, func(s string) error {
		_, err := strconv.ParseInt(s, 10, 64)
		return err
	})
}

// int64Text is the common part of isFixed64 and isInt64: the value's text,
// whether quoted or a bare number, must match digits and parse in range.
func int64Text(path string, v any, typ string, digits *regexp.Regexp, parse func(string) error) error {
	var s string
	switch t := v.(type) {
	case string:
		s = t
	case json.Number:
		s = t.String()
	default:
		return pathErr(path, "want a %s as a decimal string or integer number, got %s", typ, describe(v))
	}
	if !digits.MatchString(s) {
		return pathErr(path, "%s is not a decimal %s", describe(v), typ)
	}
	if parse(s) != nil {
		return pathErr(path, "%s is out of range for %s", describe(v), typ)
	}
	return nil
}

// asUint64 returns the value of a fixed64 field that isFixed64 accepted.
func asUint64(v any) uint64 {
	var s string
	switch t := v.(type) {
	case string:
		s = t
	case json.Number:
		s = t.String()
	}
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// hexID accepts a trace or span id: exactly 2*size lowercase hex digits,
// not all zero (OTLP/JSON encodes ids as hex, not base64).
func hexID(what string, size int) checker {
	return func(path string, v any) error {
		s, ok := v.(string)
		if !ok {
			return pathErr(path, "want a %s as a hex string, got %s", what, describe(v))
		}
		if !isLowerHex(s, 2*size) {
			return pathErr(path, "%s is not a %s of %d lowercase hex digits", describe(v), what, 2*size)
		}
		if strings.Trim(s, "0") == "" {
			return pathErr(path, "all-zero %s is invalid", what)
		}
		return nil
	}
}

// parentSpanID accepts "" (a root span) or a valid span id.
func parentSpanID(path string, v any) error {
	if v == "" {
		return nil
	}
	return hexID("span id", 8)(path, v)
}

// isLowerHex reports whether s is exactly n characters of [0-9a-f].
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isBytes accepts a bytes field: standard, padded base64 (what the
// collector's decoder accepts).
func isBytes(path string, v any) error {
	s, ok := v.(string)
	if !ok {
		return pathErr(path, "want a base64 string, got %s", describe(v))
	}
	if _, err := base64.StdEncoding.DecodeString(s); err != nil {
		return pathErr(path, "%s is not standard padded base64", describe(v))
	}
	return nil
}

// enum accepts an enum field as a JSON integer number in 0..highest. (The
// protobuf JSON mapping also allows enum names; OTLP/JSON requires integers.)
func enum(name string, highest int64) checker {
	return func(path string, v any) error {
		n, ok := v.(json.Number)
		if !ok {
			return pathErr(path, "want an integer %s, got %s", name, describe(v))
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || i < 0 || i > highest {
			return pathErr(path, "%s is not a %s (0..%d)", n, name, highest)
		}
		return nil
	}
}

// ---------------------------------------------------------------------------
// Recording accepted spans
// ---------------------------------------------------------------------------

// spanRecord is one line of the spans file.
type spanRecord struct {
	Resource     map[string]any `json:"resource"`
	Scope        string         `json:"scope"`
	TraceID      string         `json:"traceId"`
	SpanID       string         `json:"spanId"`
	ParentSpanID string         `json:"parentSpanId"`
	Name         string         `json:"name"`
	Kind         int            `json:"kind"`
	Start        string         `json:"start"`
	End          string         `json:"end"`
	Attributes   map[string]any `json:"attributes"`
	Status       statusRecord   `json:"status"`
	Links        []linkRecord   `json:"links"`
	Events       []string       `json:"events"`
}

type statusRecord struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type linkRecord struct {
	TraceID string `json:"traceId"`
	SpanID  string `json:"spanId"`
}

// record appends every span of td to the spans file, as one write under the
// mutex so the request's lines stay together and whole.
func (s *server) record(td ptrace.Traces) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // Encode ends each record with '\n'
	enc.SetEscapeHTML(false)
	for _, rs := range td.ResourceSpans().All() {
		resource := rs.Resource().Attributes().AsRaw()
		for _, ss := range rs.ScopeSpans().All() {
			for _, span := range ss.Spans().All() {
				if err := enc.Encode(newSpanRecord(resource, ss.Scope().Name(), span)); err != nil {
					return err
				}
			}
		}
	}
	return s.appendLine(s.spans, buf.Bytes())
}

// newSpanRecord flattens one decoded span into a spanRecord.
func newSpanRecord(resource map[string]any, scope string, span ptrace.Span) spanRecord {
	rec := spanRecord{
		Resource:     resource,
		Scope:        scope,
		TraceID:      span.TraceID().String(),
		SpanID:       span.SpanID().String(),
		ParentSpanID: span.ParentSpanID().String(),
		Name:         span.Name(),
		Kind:         int(span.Kind()),
		Start:        strconv.FormatUint(uint64(span.StartTimestamp()), 10),
		End:          strconv.FormatUint(uint64(span.EndTimestamp()), 10),
		Attributes:   span.Attributes().AsRaw(),
		Status:       statusRecord{Code: int(span.Status().Code()), Message: span.Status().Message()},
		Links:        []linkRecord{},
		Events:       []string{},
	}
	for _, l := range span.Links().All() {
		rec.Links = append(rec.Links, linkRecord{TraceID: l.TraceID().String(), SpanID: l.SpanID().String()})
	}
	for _, e := range span.Events().All() {
		rec.Events = append(rec.Events, e.Name())
	}
	return rec
}

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of what the edge accepts, before anything is parsed by the MCP layer.
const (
	// DefaultMaxBodyBytes bounds one JSON-RPC message posted by an agent.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultMaxDepth bounds the nesting of objects and arrays in one message.
	DefaultMaxDepth = 64
)

// JSON-RPC error codes used at the edge (JSON-RPC 2.0 §5.1).
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
)

// edgeError is a message refused at the edge: it never reaches the MCP
// layer, a policy or an upstream.
type edgeError struct {
	status int    // HTTP status of the refusal
	code   int    // JSON-RPC error code
	msg    string // says what was wrong, for the agent's developer
	id     json.RawMessage
}

func (e *edgeError) Error() string { return e.msg }

// checkMessage validates one posted JSON-RPC message: well-formed UTF-8 JSON,
// a single object (no batch), bounded nesting, and no object anywhere with
// a duplicate key or two keys that differ only in case. Go's decoder matches
// struct fields case-insensitively and keeps the last duplicate, so such a
// message could be authorised on one value and executed on another
// (the CVE-2026-27896 class); toolgate refuses it instead of guessing.
// It returns what later stages read of the message: its method ("" for a
// response) and its raw id and params (parts of body).
func checkMessage(body []byte, maxDepth int) (*posted, *edgeError) {
	if !utf8.Valid(body) {
		return nil, &edgeError{status: http.StatusBadRequest, code: codeParseError, msg: "body is not valid UTF-8"}
	}
	c := checker{buf: body, maxDepth: maxDepth}
	c.skipSpace()
	if c.pos < len(c.buf) && c.buf[c.pos] == '[' {
		return nil, &edgeError{status: http.StatusBadRequest, code: codeInvalidRequest, msg: "JSON-RPC batches are not supported: send one message per request"}
	}
	if c.pos >= len(c.buf) || c.buf[c.pos] != '{' {
		return nil, &edgeError{status: http.StatusBadRequest, code: codeInvalidRequest, msg: "a JSON-RPC message must be a JSON object"}
	}
	if err := c.value(0); err != nil {
		return nil, &edgeError{status: http.StatusBadRequest, code: codeParseError, msg: err.Error()}
	}
	c.skipSpace()
	if c.pos != len(c.buf) {
		return nil, &edgeError{status: http.StatusBadRequest, code: codeParseError, msg: fmt.Sprintf("unexpected data after the JSON object at byte %d", c.pos)}
	}
	method, e := checkEnvelope(&c.env)
	if e != nil {
		return nil, e
	}
	return &posted{method: method, body: body, id: c.env.id, params: c.env.params}, nil
}

// postedKey holds the message of a POST, checked by edgeHandler.
type postedKey struct{}

type posted struct {
	method string // its JSON-RPC method
	body   []byte // the whole body, not to be modified
	// The raw values of its "id" and "params" members (parts of body),
	// nil when absent. The edge refuses duplicate and case-variant keys,
	// so these are the members every later decoder reads.
	id, params []byte
}

// methodFrom returns the JSON-RPC method of the request's posted message,
// or "".
func methodFrom(ctx context.Context) string {
	p, _ := ctx.Value(postedKey{}).(*posted)
	if p == nil {
		return ""
	}
	return p.method
}

// bodyFrom returns the request's posted message, or nil.
func bodyFrom(ctx context.Context) []byte {
	if p := postedFrom(ctx); p != nil {
		return p.body
	}
	return nil
}

// postedFrom returns what the edge kept of the request's posted message,
// or nil.
func postedFrom(ctx context.Context) *posted {
	p, _ := ctx.Value(postedKey{}).(*posted)
	return p
}

// checkEnvelope checks the JSON-RPC 2.0 fields of a message already known
// to be a well-formed object without duplicate keys.
func checkEnvelope(env *envelope) (string, *edgeError) {
	id := json.RawMessage(env.id)
	bad := func(msg string) *edgeError {
		e := &edgeError{status: http.StatusBadRequest, code: codeInvalidRequest, msg: msg}
		if validID(id) {
			e.id = id
		}
		return e
	}
	var version string
	if err := json.Unmarshal(env.jsonrpc, &version); err != nil || version != "2.0" {
		return "", bad(`"jsonrpc" must be "2.0"`)
	}
	if len(id) > 0 && !validID(id) {
		return "", bad(`"id" must be a string or an integer`)
	}
	if env.method == nil {
		// A response to a server-initiated request (sampling, elicitation).
		if len(id) == 0 || (env.result == nil) == (env.error == nil) {
			return "", bad("a message without \"method\" must be a response with an id and exactly one of result or error")
		}
		return "", nil
	}
	var method string
	if err := json.Unmarshal(env.method, &method); err != nil || method == "" {
		return "", bad(`"method" must be a non-empty string`)
	}
	if p := env.params; len(p) > 0 && p[0] != '{' && p[0] != '[' {
		return method, bad(`"params" must be an object`)
	}
	return method, nil
}

// validID reports whether raw is a JSON-RPC id toolgate accepts: a string
// or an integer (MCP forbids null ids).
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"':
		return true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return !bytes.ContainsAny(raw, ".eE")
	}
	return false
}

// checker is a small recursive-descent JSON validator that also tracks
// object keys. It allocates only for keys that contain escapes.
type checker struct {
	buf      []byte
	pos      int
	maxDepth int
	env      envelope // the top-level object's JSON-RPC members, as scanned
}

// envelope holds the raw values of a message's JSON-RPC members, keyed by
// their exact names ("Method" is not "method"); nil when absent. The
// checker fills it while it validates, so the message is scanned once.
type envelope struct {
	jsonrpc, id, method, params, result, error []byte
}

// member returns where the top-level member key is kept, or nil.
func (e *envelope) member(key string) *[]byte {
	switch key {
	case "jsonrpc":
		return &e.jsonrpc
	case "id":
		return &e.id
	case "method":
		return &e.method
	case "params":
		return &e.params
	case "result":
		return &e.result
	case "error":
		return &e.error
	}
	return nil
}

var errEOF = errors.New("unexpected end of JSON input")

func (c *checker) skipSpace() {
	for c.pos < len(c.buf) {
		switch c.buf[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *checker) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", c.pos, fmt.Sprintf(format, args...))
}

func (c *checker) value(depth int) error {
	c.skipSpace()
	if c.pos >= len(c.buf) {
		return errEOF
	}
	switch ch := c.buf[c.pos]; {
	case ch == '{':
		return c.object(depth + 1)
	case ch == '[':
		return c.array(depth + 1)
	case ch == '"':
		_, _, err := c.str()
		return err
	case ch == '-' || (ch >= '0' && ch <= '9'):
		return c.number()
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	default:
		return c.errorf("unexpected character %q", ch)
	}
}

func (c *checker) literal(word string) error {
	if !bytes.HasPrefix(c.buf[c.pos:], []byte(word)) {
		return c.errorf("invalid literal")
	}
	c.pos += len(word)
	return nil
}

func (c *checker) number() error {
	start := c.pos
	if c.buf[c.pos] == '-' {
		c.pos++
	}
	digits := func() int {
		n := 0
		for c.pos < len(c.buf) && c.buf[c.pos] >= '0' && c.buf[c.pos] <= '9' {
			c.pos++
			n++
		}
		return n
	}
	if c.pos < len(c.buf) && c.buf[c.pos] == '0' {
		c.pos++
	} else if digits() == 0 {
		return c.errorf("invalid number")
	}
	if c.pos < len(c.buf) && c.buf[c.pos] == '.' {
		c.pos++
		if digits() == 0 {
			return c.errorf("invalid number")
		}
	}
	if c.pos < len(c.buf) && (c.buf[c.pos] == 'e' || c.buf[c.pos] == 'E') {
		c.pos++
		if c.pos < len(c.buf) && (c.buf[c.pos] == '+' || c.buf[c.pos] == '-') {
			c.pos++
		}
		if digits() == 0 {
			return c.errorf("invalid number")
		}
	}
	if c.pos-start > 4096 {
		return c.errorf("number longer than 4096 characters")
	}
	return nil
}

// str scans a string starting at the opening quote and returns its raw
// contents (without quotes) and whether it contains escapes.
func (c *checker) str() (raw []byte, escaped bool, err error) {
	c.pos++ // opening quote
	start := c.pos
	for c.pos < len(c.buf) {
		ch := c.buf[c.pos]
		switch {
		case ch == '"':
			raw = c.buf[start:c.pos]
			c.pos++
			return raw, escaped, nil
		case ch == '\\':
			escaped = true
			if c.pos+1 >= len(c.buf) {
				return nil, false, errEOF
			}
			switch c.buf[c.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				c.pos += 2
			case 'u':
				if c.pos+6 > len(c.buf) || !isHex4(c.buf[c.pos+2:c.pos+6]) {
					return nil, false, c.errorf("invalid \\u escape")
				}
				c.pos += 6
			default:
				return nil, false, c.errorf("invalid escape")
			}
		case ch < 0x20:
			return nil, false, c.errorf("control character in string")
		default:
			c.pos++
		}
	}
	return nil, false, errEOF
}

func isHex4(b []byte) bool {
	for _, ch := range b {
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
			return false
		}
	}
	return true
}

func (c *checker) object(depth int) error {
	if depth > c.maxDepth {
		return c.errorf("nesting deeper than %d", c.maxDepth)
	}
	c.pos++ // {
	var keys keySet
	c.skipSpace()
	if c.pos < len(c.buf) && c.buf[c.pos] == '}' {
		c.pos++
		return nil
	}
	for {
		c.skipSpace()
		if c.pos >= len(c.buf) {
			return errEOF
		}
		if c.buf[c.pos] != '"' {
			return c.errorf("object key must be a string")
		}
		keyPos := c.pos
		raw, escaped, err := c.str()
		if err != nil {
			return err
		}
		key := string(raw)
		if escaped {
			// Compare keys as the decoder will see them: "na\u006de" is "name".
			if err := json.Unmarshal(c.buf[keyPos:c.pos], &key); err != nil {
				return c.errorf("invalid key: %v", err)
			}
		}
		if err := keys.add(key, keyPos); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.buf) {
			return errEOF
		}
		if c.buf[c.pos] != ':' {
			return c.errorf("expected ':' after object key")
		}
		c.pos++
		c.skipSpace()
		start := c.pos
		if err := c.value(depth); err != nil {
			return err
		}
		if depth == 1 { // the message itself
			if m := c.env.member(key); m != nil {
				*m = c.buf[start:c.pos]
			}
		}
		c.skipSpace()
		if c.pos >= len(c.buf) {
			return errEOF
		}
		switch c.buf[c.pos] {
		case ',':
			c.pos++
		case '}':
			c.pos++
			return nil
		default:
			return c.errorf("expected ',' or '}' in object")
		}
	}
}

// keySet holds the keys of one object seen so far. Small objects are
// scanned; past keySetScan keys a map keyed by the case-folded key keeps the
// check linear, so that one object of many keys cannot cost quadratic time
// (a 4 MiB object holds some 400,000 keys).
type keySet struct {
	list   []string
	folded map[string]string // foldKey(key) -> key
}

const keySetScan = 16

// add records key, or reports that an earlier key equals it or differs
// from it only in case, as strings.EqualFold (and so encoding/json) sees it.
func (s *keySet) add(key string, pos int) error {
	clash := func(k string) error {
		if k == key {
			return fmt.Errorf("duplicate key %q at byte %d", key, pos)
		}
		return fmt.Errorf("keys %q and %q differ only in case (byte %d): rename one", k, key, pos)
	}
	if s.folded == nil {
		for _, k := range s.list {
			if strings.EqualFold(k, key) {
				return clash(k)
			}
		}
		s.list = append(s.list, key)
		if len(s.list) <= keySetScan {
			return nil
		}
		s.folded = make(map[string]string, 2*len(s.list))
		for _, k := range s.list {
			s.folded[foldKey(k)] = k
		}
		s.list = nil
		return nil
	}
	f := foldKey(key)
	if k, ok := s.folded[f]; ok {
		return clash(k)
	}
	s.folded[f] = key
	return nil
}

// foldKey maps every rune to the smallest rune of its simple case-folding
// orbit, so that foldKey(a) == foldKey(b) exactly when strings.EqualFold(a, b).
func foldKey(k string) string {
	var b strings.Builder
	b.Grow(len(k))
	for _, r := range k {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

func (c *checker) array(depth int) error {
	if depth > c.maxDepth {
		return c.errorf("nesting deeper than %d", c.maxDepth)
	}
	c.pos++ // [
	c.skipSpace()
	if c.pos < len(c.buf) && c.buf[c.pos] == ']' {
		c.pos++
		return nil
	}
	for {
		if err := c.value(depth); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.buf) {
			return errEOF
		}
		switch c.buf[c.pos] {
		case ',':
			c.pos++
		case ']':
			c.pos++
			return nil
		default:
			return c.errorf("expected ',' or ']' in array")
		}
	}
}

// edgeHandler refuses oversized and malformed posted messages before next
// sees them; GET and DELETE pass through untouched.
func edgeHandler(next http.Handler, maxBody int64, maxDepth int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeEdgeError(w, &edgeError{status: http.StatusRequestEntityTooLarge, code: codeInvalidRequest,
					msg: fmt.Sprintf("request body larger than %d bytes", maxBody)})
				return
			}
			writeEdgeError(w, &edgeError{status: http.StatusBadRequest, code: codeParseError, msg: "reading request body: " + err.Error()})
			return
		}
		msg, e := checkMessage(body, maxDepth)
		if e != nil {
			writeEdgeError(w, e)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), postedKey{}, msg)))
	})
}

type rpcErrorObject struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeEdgeError(w http.ResponseWriter, e *edgeError) {
	id := e.id
	if id == nil {
		id = json.RawMessage("null")
	}
	msg, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcErrorObject  `json:"error"`
	}{"2.0", id, rpcErrorObject{e.code, e.msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_, _ = w.Write(msg)
}

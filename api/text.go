package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// encoding/json silently replaces invalid UTF-8 and unpaired UTF-16
// surrogate escapes ("\ud800") with U+FFFD, so neither would reach the
// field checks. JSON bodies are therefore checked as raw bytes before or
// while they are decoded, and rejected with a 400 naming the byte offset
// (and, for buffered bodies, the JSON path).

// textError is a JSON body that is not valid text.
type textError struct {
	// Offset is the byte offset of the offending sequence in the body.
	Offset int64
	// Reason says what is wrong with it.
	Reason string
}

func (e *textError) Error() string {
	return fmt.Sprintf("%s at byte %d; JSON bodies must be UTF-8 without unpaired surrogates", e.Reason, e.Offset)
}

// Escape states of textCheck.
const (
	escNone      = iota
	escBackslash // after '\'
	escHex       // in the 4 hex digits of \uXXXX
	escLowSlash  // after a high surrogate, expecting '\'
	escLowU      // expecting 'u'
	escLowHex    // in the hex digits of the low surrogate
)

// textCheck validates a byte stream incrementally: UTF-8 sequences may be
// split across calls, and a high surrogate escape must be followed by a
// low one. Backslashes occur only inside strings in valid JSON, so no
// string tracking is needed; anything else malformed is left to the JSON
// decoder.
type textCheck struct {
	off    int64 // bytes accepted so far
	esc    int
	nhex   int
	hex    rune
	escAt  int64 // offset of the current escape's backslash
	highAt int64 // offset of a high surrogate awaiting its low half
}

// scan checks data, which follows the bytes accepted so far, and returns
// how many of its leading bytes are accepted. Fewer than len(data) with a
// nil error means data ends inside a UTF-8 sequence: pass the rest again
// with more data, or with atEOF set.
func (c *textCheck) scan(data []byte, atEOF bool) (int, error) {
	i := 0
	defer func() { c.off += int64(i) }()
	for i < len(data) {
		b := data[i]
		if b < utf8.RuneSelf {
			if err := c.step(b, c.off+int64(i)); err != nil {
				return i, err
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			if !atEOF && !utf8.FullRune(data[i:]) {
				return i, nil
			}
			return i, &textError{Offset: c.off + int64(i), Reason: "invalid UTF-8"}
		}
		if c.esc >= escLowSlash {
			return i, c.unpaired()
		}
		c.esc = escNone
		i += size
	}
	return i, nil
}

func (c *textCheck) unpaired() error {
	return &textError{Offset: c.highAt, Reason: "unpaired UTF-16 surrogate escape"}
}

// step advances the escape state over the ASCII byte b at offset at.
func (c *textCheck) step(b byte, at int64) error {
	switch c.esc {
	case escNone:
		if b == '\\' {
			c.esc, c.escAt = escBackslash, at
		}
	case escBackslash:
		c.esc = escNone
		if b == 'u' {
			c.esc, c.nhex, c.hex = escHex, 0, 0
		}
	case escHex, escLowHex:
		d := hexDigit(b)
		if d < 0 {
			if c.esc == escLowHex {
				return c.unpaired()
			}
			c.esc = escNone // a malformed escape: the decoder reports it
			return nil
		}
		c.hex, c.nhex = c.hex<<4|rune(d), c.nhex+1
		if c.nhex < 4 {
			return nil
		}
		low := c.hex >= 0xdc00 && c.hex <= 0xdfff
		high := c.hex >= 0xd800 && c.hex <= 0xdbff
		switch {
		case c.esc == escLowHex && !low:
			return c.unpaired()
		case c.esc == escLowHex:
			c.esc = escNone
		case low:
			return &textError{Offset: c.escAt, Reason: "unpaired UTF-16 surrogate escape"}
		case high:
			c.esc, c.highAt = escLowSlash, c.escAt
		default:
			c.esc = escNone
		}
	case escLowSlash:
		if b != '\\' {
			return c.unpaired()
		}
		c.esc = escLowU
	case escLowU:
		if b != 'u' {
			return c.unpaired()
		}
		c.esc, c.nhex, c.hex = escLowHex, 0, 0
	}
	return nil
}

func hexDigit(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	case b >= 'A' && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}

// checkText checks a whole JSON body. It returns a 400 naming the JSON
// path and byte offset of the first offending sequence, or nil.
func checkText(body []byte) *Error {
	if utf8.Valid(body) && bytes.IndexByte(body, '\\') < 0 {
		return nil
	}
	var c textCheck
	_, err := c.scan(body, true)
	var te *textError
	if !errors.As(err, &te) {
		return nil
	}
	return badJSON(jsonPathAt(body, te.Offset), "%s", te.Error())
}

// textReader passes a JSON body through textCheck. It withholds bytes
// from the first offending one on, so the decoder cannot complete a value
// that holds them, and then fails with a *textError.
type textReader struct {
	r   io.Reader
	chk textCheck
	buf []byte
	// buf[start:ok] is checked and not yet returned; buf[ok:end] is an
	// incomplete UTF-8 sequence awaiting more data.
	start, ok, end int
	err            error // returned once the checked bytes are consumed
}

func newTextReader(r io.Reader) *textReader { return &textReader{r: r, buf: make([]byte, 32<<10)} }

func (t *textReader) Read(p []byte) (int, error) {
	for t.start == t.ok {
		if t.err != nil {
			return 0, t.err
		}
		n := copy(t.buf, t.buf[t.ok:t.end])
		t.start, t.ok, t.end = 0, 0, n
		m, err := t.r.Read(t.buf[n:])
		t.end += m
		accepted, cerr := t.chk.scan(t.buf[:t.end], errors.Is(err, io.EOF))
		t.ok = accepted
		switch {
		case cerr != nil:
			t.err = cerr
		case err != nil:
			t.err = err
		}
	}
	n := copy(p, t.buf[t.start:t.ok])
	t.start += n
	return n, nil
}

// jsonPathAt returns the JSON path ("[3].worker", "items[1]") of the
// member name or value that holds byte off of body, as far as body parses
// up to off; "" at the top level.
func jsonPathAt(body []byte, off int64) string {
	type frame struct {
		array   bool
		index   int
		key     string
		wantKey bool
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.array:
				b.WriteString("[" + strconv.Itoa(f.index) + "]")
			case f.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			}
		}
		return b.String()
	}
	// valueDone moves the innermost container past the value just read.
	valueDone := func() {
		if n := len(stack); n > 0 {
			if stack[n-1].array {
				stack[n-1].index++
			} else {
				stack[n-1].wantKey, stack[n-1].key = true, ""
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return path()
		}
		end := dec.InputOffset()
		top := len(stack) - 1
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				stack = append(stack, frame{array: d == '[', wantKey: d == '{'})
			default:
				stack = stack[:top]
				valueDone()
			}
			continue
		}
		if top >= 0 && !stack[top].array && stack[top].wantKey {
			stack[top].key, stack[top].wantKey = fmt.Sprint(tok), false
			if end > off {
				return path()
			}
			continue
		}
		if end > off {
			return path()
		}
		valueDone()
	}
}

package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// LogLine is one decoded JSON log line: its top-level keys and values
// (nested groups as map[string]any).
type LogLine map[string]any

// Str returns the value of key as a string ("" when absent); numbers and
// booleans are formatted.
func (l LogLine) Str(key string) string {
	v, ok := l[key]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// Has reports whether the line has key.
func (l LogLine) Has(key string) bool {
	_, ok := l[key]
	return ok
}

// ParseJSONLog decodes a JSON log, one object a line, and returns an
// error naming the first line that is not a JSON object or that has a
// key twice in the same object (which encoding/json would silently
// accept, keeping the last value).
func ParseJSONLog(text string) ([]LogLine, error) {
	var lines []LogLine
	for i, raw := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if raw == "" && text == "" {
			break
		}
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.UseNumber()
		v, err := decodeStrict(dec)
		if err == nil {
			if _, err2 := dec.Token(); err2 != io.EOF {
				err = fmt.Errorf("trailing data")
			}
		}
		obj, ok := v.(map[string]any)
		if err == nil && !ok {
			err = fmt.Errorf("not an object")
		}
		if err != nil {
			return lines, fmt.Errorf("log line %d %q: %v", i+1, raw, err)
		}
		lines = append(lines, LogLine(obj))
	}
	return lines, nil
}

// decodeStrict decodes the next JSON value with Token, failing on a
// duplicate key in any object.
func decodeStrict(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := make(map[string]any)
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				if _, dup := obj[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				v, err := decodeStrict(dec)
				if err != nil {
					return nil, err
				}
				obj[k] = v
			}
			_, err := dec.Token() // '}'
			return obj, err
		case '[':
			var arr []any
			for dec.More() {
				v, err := decodeStrict(dec)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			_, err := dec.Token() // ']'
			return arr, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	}
	return tok, nil
}

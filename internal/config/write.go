package config

import (
	"bufio"
	"encoding"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// commentWidth is the width comments are wrapped to, including "# ".
const commentWidth = 78

const fileHeader = `# postino configuration file.
#
# Every setting is shown with its default value; delete or comment out any
# line to keep the default. Unknown keys are errors. Durations are written
# like "90s", "10m" or "1h"; sizes like "50MiB", "512K" or 1048576.
`

// WriteDefault writes the fully commented default configuration file to w:
// every section and key of Config with its comment and default value as
// valid TOML. Loading the output with Load yields exactly Default. Settings
// whose default is computed at run time (hostname) are written commented
// out, with an example value.
func WriteDefault(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(fileHeader)
	if err := writeTable(bw, reflect.ValueOf(Default()).Elem(), ""); err != nil {
		return err
	}
	return bw.Flush()
}

// writeTable writes the keys of the struct v, then its sub-tables (TOML
// requires a table's own keys before any nested table header).
func writeTable(w *bufio.Writer, v reflect.Value, prefix string) error {
	t := v.Type()
	for f := range fields(t) {
		if isSection(f) {
			continue
		}
		if isArrayTable(f) {
			writeArrayTableExample(w, f, prefix)
			continue
		}
		w.WriteString("\n")
		writeComment(w, f.Tag.Get("comment"))
		fv := v.FieldByIndex(f.Index)
		if ex, ok := f.Tag.Lookup("example"); ok {
			fv = reflect.ValueOf(ex)
		}
		val, err := tomlValue(fv)
		if err != nil {
			return fmt.Errorf("config: writing %s%s: %w", prefix, f.Tag.Get("toml"), err)
		}
		if _, ok := f.Tag.Lookup("example"); ok {
			w.WriteString("# ")
		}
		w.WriteString(f.Tag.Get("toml") + " = " + val + "\n")
	}
	for f := range fields(t) {
		if !isSection(f) {
			continue
		}
		name := prefix + f.Tag.Get("toml")
		w.WriteString("\n\n")
		writeComment(w, f.Tag.Get("comment"))
		w.WriteString("[" + name + "]\n")
		if err := writeTable(w, v.FieldByIndex(f.Index), name+"."); err != nil {
			return err
		}
	}
	return nil
}

// writeComment writes text as "# " lines wrapped to commentWidth.
func writeComment(w *bufio.Writer, text string) {
	line := "#"
	for _, word := range strings.Fields(text) {
		if len(line) > 1 && len(line)+1+len(word) > commentWidth {
			w.WriteString(line + "\n")
			line = "#"
		}
		line += " " + word
	}
	if len(line) > 1 {
		w.WriteString(line + "\n")
	}
}

// tomlValue formats v as a TOML value.
func tomlValue(v reflect.Value) (string, error) {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err != nil {
			return "", err
		}
		return tomlString(string(b)), nil
	}
	switch v.Kind() {
	case reflect.String:
		return tomlString(v.String()), nil
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		// TOML floats need a fraction or exponent: 5 is written 5.0.
		f := strconv.FormatFloat(v.Float(), 'f', -1, 64)
		if !strings.ContainsAny(f, ".eEnN") {
			f += ".0"
		}
		return f, nil
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			s, err := tomlValue(v.Index(i))
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	}
	return "", fmt.Errorf("unsupported type %s", v.Type())
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s { // invalid UTF-8 becomes U+FFFD
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

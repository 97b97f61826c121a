package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes itself in TOML as a Go
// duration string such as "90s", "10m" or "1h30m".
type Duration struct {
	time.Duration
}

// D returns d as a Duration. It keeps struct literals short.
func D(d time.Duration) Duration { return Duration{d} }

// UnmarshalText implements encoding.TextUnmarshaler. It accepts anything
// time.ParseDuration accepts; a bare number other than 0 is refused because
// its unit would be a guess.
func (d *Duration) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if s == "" {
		return errors.New(`invalid duration "": empty (use e.g. "90s", "10m", "1h")`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("invalid duration %q: missing unit (use e.g. \"90s\", \"10m\", \"1h\")", s)
		}
		return fmt.Errorf("invalid duration %q (use e.g. \"90s\", \"10m\", \"1h\")", s)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler, producing the shortest
// natural form ("10m" rather than time.Duration's "10m0s").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String formats d like time.Duration.String but drops zero components, so
// 10 minutes is "10m" and 90 seconds is "1m30s". The result parses back with
// time.ParseDuration.
func (d Duration) String() string {
	v := d.Duration
	if v == 0 {
		return "0s"
	}
	if v < 0 || v%time.Second != 0 {
		return v.String()
	}
	var b strings.Builder
	if h := v / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "h")
		v -= h * time.Hour
	}
	if m := v / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "m")
		v -= m * time.Minute
	}
	if s := v / time.Second; s > 0 {
		b.WriteString(strconv.FormatInt(int64(s), 10) + "s")
	}
	return b.String()
}

// Size is a number of bytes. In TOML it may be written as an integer
// (1048576) or as a string with an optional unit: "512", "512B", "512k",
// "10MiB", "50MB". The number must be a whole number; fractions such as
// "1.5MB" are not accepted.
//
// Units follow GNU coreutils: the SI forms KB, MB, GB, TB are powers of 1000;
// the binary forms KiB, MiB, GiB, TiB and the bare letters K, M, G, T are
// powers of 1024. Units are case-insensitive and may be separated from the
// number by spaces.
type Size int64

// Common sizes.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"k":   1 << 10,
	"kib": 1 << 10,
	"kb":  1e3,
	"m":   1 << 20,
	"mib": 1 << 20,
	"mb":  1e6,
	"g":   1 << 30,
	"gib": 1 << 30,
	"gb":  1e9,
	"t":   1 << 40,
	"tib": 1 << 40,
	"tb":  1e12,
}

// ParseSize parses a size such as "50MB", "10MiB", "1048576" or "512k"; see
// Size for the units. Negative sizes and values that overflow int64 are
// errors.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		if t == "" {
			return 0, errors.New(`invalid size "": empty (use e.g. "50MiB", "512k", "1048576")`)
		}
		return 0, fmt.Errorf("invalid size %q: must start with a non-negative whole number (use e.g. \"50MiB\", \"512k\", \"1048576\")", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: number too large", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB)", s, unit)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n * mult), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseSize. TOML
// integers arrive here as decimal text too.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler using String.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// String formats s in the largest unit that represents it exactly, preferring
// binary units: 50 MiB is "50MiB", 5000000 is "5MB" and 1000001 is
// "1000001". Negative sizes (which ParseSize never returns) are plain
// numbers. The result parses back to s with ParseSize.
func (s Size) String() string {
	n := int64(s)
	if n <= 0 {
		return strconv.FormatInt(n, 10)
	}
	for _, u := range []struct {
		name string
		mult int64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6},
		{"KiB", 1 << 10}, {"KB", 1e3},
	} {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Human formats s for people, rounded to one decimal in the largest binary
// unit it reaches: "512 B", "1.5 KiB", "23.0 MiB", "1.2 GiB". Unlike
// String, it does not parse back exactly.
func (s Size) Human() string {
	n := int64(s)
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Bytes returns s as an int64 number of bytes.
func (s Size) Bytes() int64 { return int64(s) }

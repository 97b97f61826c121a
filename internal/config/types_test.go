package config

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  string
	}{
		{"0", 0, ""},
		{"1048576", 1 << 20, ""},
		{"512", 512, ""},
		{"512B", 512, ""},
		{"512b", 512, ""},
		{"512k", 512 << 10, ""},
		{"512K", 512 << 10, ""},
		{"512KiB", 512 << 10, ""},
		{"2KB", 2000, ""},
		{"2kB", 2000, ""},
		{"50MB", 50_000_000, ""},
		{"50mb", 50_000_000, ""},
		{"10MiB", 10 << 20, ""},
		{"10M", 10 << 20, ""},
		{"10 MiB", 10 << 20, ""},
		{"  10MiB  ", 10 << 20, ""},
		{"1G", 1 << 30, ""},
		{"1GiB", 1 << 30, ""},
		{"3GB", 3_000_000_000, ""},
		{"2T", 2 << 40, ""},
		{"2TB", 2_000_000_000_000, ""},
		{"2TiB", 2 << 40, ""},
		{"9223372036854775807", math.MaxInt64, ""},
		{"", 0, "empty"},
		{"   ", 0, "empty"},
		{"MB", 0, "must start with a non-negative whole number"},
		{"-1", 0, "must start with a non-negative whole number"},
		{"+1", 0, "must start with a non-negative whole number"},
		{"1.5MB", 0, `unknown unit ".5MB"`},
		{"50XB", 0, `unknown unit "XB"`},
		{"50 M B", 0, "unknown unit"},
		{"9223372036854775808", 0, "number too large"},
		{"8388608TiB", 0, "too large"},
		{"9007199254740993K", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestSizeHuman(t *testing.T) {
	for in, want := range map[Size]string{
		0:                "0 B",
		1023:             "1023 B",
		1024:             "1.0 KiB",
		1536:             "1.5 KiB",
		23*MiB + 100*KiB: "23.1 MiB",
		GiB + GiB/5:      "1.2 GiB",
		3 * TiB:          "3072.0 GiB",
	} {
		if got := in.Human(); got != want {
			t.Errorf("Size(%d).Human() = %q, want %q", int64(in), got, want)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1KB"},
		{1024, "1KiB"},
		{1025, "1025"},
		{50 * MiB, "50MiB"},
		{50_000_000, "50MB"},
		{1_000_001, "1000001"},
		{GiB, "1GiB"},
		{3 * TiB, "3TiB"},
		{2_000_000_000_000, "2TB"},
		{1024000, "1000KiB"},
		{-5, "-5"},
		{math.MaxInt64, "9223372036854775807"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		back, err := ParseSize(tt.want)
		if err != nil || back != tt.in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.want, back, err, tt.in)
		}
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"10m", 10 * time.Minute, ""},
		{"90s", 90 * time.Second, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{" 5m ", 5 * time.Minute, ""},
		{"-1s", -time.Second, ""},
		{"", 0, "empty"},
		{"600", 0, "missing unit"},
		{"10 minutes", 0, `invalid duration "10 minutes"`},
		{"1d", 0, `invalid duration "1d"`},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("UnmarshalText(%q) = %s, %v; want error containing %q", tt.in, d, err, tt.err)
			}
			continue
		}
		if err != nil || d.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %s, %v; want %s", tt.in, d, err, tt.want)
		}
	}

	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{10 * time.Minute, "10m"},
		{90 * time.Second, "1m30s"},
		{time.Hour, "1h"},
		{25*time.Hour + time.Second, "25h1s"},
		{1500 * time.Millisecond, "1.5s"},
		{-time.Minute, "-1m0s"},
	} {
		b, err := D(tt.in).MarshalText()
		if err != nil || string(b) != tt.want {
			t.Errorf("MarshalText(%v) = %q, %v; want %q", tt.in, b, err, tt.want)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back.Duration != tt.in {
			t.Errorf("round trip of %v: got %v, %v", tt.in, back, err)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "50MB", "10MiB", "1048576", "512k", "1.5G", "-1", "9223372036854775807", "8EiB", " 7 tb "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
		back, err := ParseSize(n.String())
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d; String %q parses to %d, %v", s, n, n.String(), back, err)
		}
	})
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("[pop3]\nlisten = \"127.0.0.1:110\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "postino.toml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			if c != nil {
				t.Fatal("Load returned both a config and an error")
			}
			return
		}
		// Whatever loads is valid, and its paths resolve without panicking.
		if err := c.Validate(); err != nil {
			t.Fatalf("Load succeeded but Validate fails: %v", err)
		}
		_, _, _, _ = c.UsersFile(), c.MailDir(), c.TLSDir(), c.AliasesFile()
	})
}

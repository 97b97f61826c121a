package config

import (
	"reflect"
)

// This file compares two configurations key by key, for a reload
// (SIGHUP): the keys a running server applies live, and those that need a
// restart. A field tagged reload:"restart" (or inside a section so
// tagged) needs a restart; every other key is applied live, so that a new
// key needs no reload code unless it is one of those.

// Changes are the keys whose values differ between two configurations,
// as dotted TOML keys in the order of the Config struct.
type Changes struct {
	// Applied are the keys a running server applies live.
	Applied []string
	// Restart are the keys that take effect only when the server is
	// restarted (listener addresses, data_dir, run_as...).
	Restart []string
}

// Empty reports whether no key changed.
func (c Changes) Empty() bool { return len(c.Applied) == 0 && len(c.Restart) == 0 }

// Diff returns the keys whose values differ between old and new. A key
// holding a list or an array of tables (smtp.trusted_networks,
// fetch.account) is one key.
func Diff(old, new *Config) Changes {
	var ch Changes
	walkLeaves(reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem(), "", false,
		func(key string, o, n reflect.Value, restart bool) {
			if reflect.DeepEqual(o.Interface(), n.Interface()) {
				return
			}
			if restart {
				ch.Restart = append(ch.Restart, key)
			} else {
				ch.Applied = append(ch.Applied, key)
			}
		})
	return ch
}

// KeepRestart returns a copy of new in which every key that needs a
// restart has old's value: the configuration a running server applies
// on reload.
func KeepRestart(old, new *Config) *Config {
	c := *new
	walkLeaves(reflect.ValueOf(old).Elem(), reflect.ValueOf(&c).Elem(), "", false,
		func(_ string, o, n reflect.Value, restart bool) {
			if restart {
				n.Set(o)
			}
		})
	return &c
}

// NeedsRestart reports whether the key (dotted, as in Changes) is tagged
// reload:"restart", itself or by its section. Unknown keys report false.
func NeedsRestart(key string) bool {
	found := false
	c := Default()
	walkLeaves(reflect.ValueOf(c).Elem(), reflect.ValueOf(c).Elem(), "", false,
		func(k string, _, _ reflect.Value, restart bool) {
			if k == key {
				found = restart
			}
		})
	return found
}

// walkLeaves calls f for each key (a field that is not a section) of the
// struct values o and n, of the same type, with its dotted key and
// whether it needs a restart.
func walkLeaves(o, n reflect.Value, prefix string, restart bool, f func(key string, o, n reflect.Value, restart bool)) {
	t := o.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() || sf.Tag.Get("toml") == "" {
			continue
		}
		key := prefix + sf.Tag.Get("toml")
		r := restart || sf.Tag.Get("reload") == "restart"
		if isSection(sf) {
			walkLeaves(o.Field(i), n.Field(i), key+".", r, f)
			continue
		}
		f(key, o.Field(i), n.Field(i), r)
	}
}

// Value returns the value of the key (dotted, as in Changes) in c, as its
// Go value; nil for an unknown key.
func (c *Config) Value(key string) any {
	var v any
	rv := reflect.ValueOf(c).Elem()
	walkLeaves(rv, rv, "", false, func(k string, o, _ reflect.Value, _ bool) {
		if k == key {
			v = o.Interface()
		}
	})
	return v
}

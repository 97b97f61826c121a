package main

import (
	"runtime/debug"
	"testing"
)

// TestBuildVersion checks the version derived from build information: the
// module version when the go command recorded one, else the revision,
// commit time and "+dirty" — never a bare "dev".
func TestBuildVersion(t *testing.T) {
	vcs := func(rev, at, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: at}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "05e1deb0123456789abcdef0123456789abcdef0"
	for _, c := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"tagged module", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"pseudo-version with +dirty", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261129231500-05e1deb01234+dirty"}, Settings: vcs(rev, "2026-11-29T23:15:00Z", "true")},
			"v0.0.0-20261129231500-05e1deb01234+dirty"},
		{"devel, clean tree", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "2026-11-29T23:15:00Z", "false")},
			"devel-05e1deb01234-20261129231500"},
		{"devel, dirty tree", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "2026-11-29T23:15:00Z", "true")},
			"devel-05e1deb01234-20261129231500+dirty"},
		{"no VCS information", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, develVersion},
	} {
		if got := buildVersion(&c.bi); got != c.want {
			t.Errorf("%s: buildVersion = %q, want %q", c.name, got, c.want)
		}
	}
}

package maildir

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func clockedStore(t *testing.T) (*Store, string, *fakeClock) {
	t.Helper()
	s, root := newTestStore(t)
	c := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s.SetClock(c.now)
	return s, root, c
}

// uids returns the UIDs of the mailbox's snapshot.
func uidsOf(t *testing.T, s *Store, box string) []string {
	t.Helper()
	md := openMD(t, s, box)
	defer md.Close()
	var out []string
	for _, m := range md.Messages() {
		out = append(out, m.UID)
	}
	return out
}

const day = 24 * time.Hour

// TestRetentionExpire: only messages downloaded by a session that ended
// with QUIT (RecordDownloads) expire, counted from their first download,
// and only once Expire has passed on the clock; a never-downloaded
// message stays whatever its age; NEVER (negative) removes nothing.
func TestRetentionExpire(t *testing.T) {
	s, root, clock := clockedStore(t)
	ctx := context.Background()
	var all []string
	for i := range 4 {
		all = append(all, mustDeliver(t, s, testBox, fmt.Sprintf("Subject: %d\n\nbody\n", i)))
	}
	// Session 1 downloads messages 0 and 1, and deletes 3.
	md := openMD(t, s, testBox)
	if err := md.Commit(ctx, []int{3}); err != nil {
		t.Fatal(err)
	}
	if err := md.RecordDownloads(ctx, []int{0, 1, 3}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	rec, err := os.ReadFile(filepath.Join(maildirPath(root), downloadsName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(rec), "\n") != 4 { // header, two messages, end
		t.Fatalf("download record:\n%s", rec)
	}
	// Ten days later a second session downloads 1 again and 2 for the
	// first time: 1 keeps its first download time.
	clock.advance(10 * day)
	md = openMD(t, s, testBox)
	if err := md.RecordDownloads(ctx, []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	md.Close()

	policy := SweepPolicy{Expire: 30 * day}
	clock.advance(20*day - time.Second) // 30 days less a second after the first
	if res, err := s.Sweep(ctx, testBox, policy); err != nil || res.Expired != 0 {
		t.Fatalf("sweep before 30 days: %+v, %v", res, err)
	}
	if res, err := s.Sweep(ctx, testBox, SweepPolicy{Expire: -1}); err != nil || res.Expired != 0 {
		t.Fatalf("sweep with NEVER: %+v, %v", res, err)
	}
	clock.advance(time.Second)
	res, err := s.Sweep(ctx, testBox, policy)
	if err != nil || res.Expired != 2 {
		t.Fatalf("sweep at 30 days: %+v, %v", res, err)
	}
	if got := uidsOf(t, s, testBox); !slices.Equal(got, all[2:3]) {
		t.Fatalf("left %v, want %v", got, all[2:3])
	}
	// The record forgets what is gone.
	rec, _ = os.ReadFile(filepath.Join(maildirPath(root), downloadsName))
	if strings.Contains(string(rec), all[0]) || !strings.Contains(string(rec), all[2]) {
		t.Fatalf("download record after the sweep:\n%s", rec)
	}
	clock.advance(10 * day)
	if res, err := s.Sweep(ctx, testBox, policy); err != nil || res.Expired != 1 {
		t.Fatalf("sweep of the second download: %+v, %v", res, err)
	}
	if got := uidsOf(t, s, testBox); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
	// No vault: nothing was kept.
	if _, err := os.Stat(filepath.Join(root, "example.test", "alice", vaultFolder)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vault folder without the vault: %v", err)
	}
	// A mailbox that never existed is left alone (not created).
	if _, err := s.Sweep(ctx, "nobody@example.test", policy); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "example.test", "nobody")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sweep created a mailbox: %v", err)
	}
}

// TestRetentionSkipsLockedMailbox: while a session holds the mailbox the
// sweep touches nothing and says so; the next sweep does the work.
func TestRetentionSkipsLockedMailbox(t *testing.T) {
	s, _, clock := clockedStore(t)
	ctx := context.Background()
	mustDeliver(t, s, testBox, "Subject: x\n\nbody\n")
	md := openMD(t, s, testBox)
	if err := md.RecordDownloads(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	clock.advance(2 * day)
	session := openMD(t, s, testBox)
	res, err := s.Sweep(ctx, testBox, SweepPolicy{Expire: day})
	if !errors.Is(err, store.ErrLocked) || res.Expired != 0 {
		t.Fatalf("sweep during a session: %+v, %v", res, err)
	}
	if len(session.Messages()) != 1 {
		t.Fatal("session lost its message")
	}
	session.Close()
	if res, err := s.Sweep(ctx, testBox, SweepPolicy{Expire: day}); err != nil || res.Expired != 1 {
		t.Fatalf("sweep after the session: %+v, %v", res, err)
	}
}

// TestVault: with the vault on, a commit moves the deleted messages into
// the vault (listed with UID, time, size, From and Subject, not counted
// by Usage); restore puts them back with their UIDL; unknown UIDs
// restore nothing; the sweep purges entries older than VaultKeep.
func TestVault(t *testing.T) {
	s, root, clock := clockedStore(t)
	ctx := context.Background()
	s.SetVault(true)
	var uids []string
	for i := range 3 {
		uids = append(uids, mustDeliver(t, s, testBox, fmt.Sprintf("From: Bob <bob@example.org>\nSubject: note %d\n\nbody %d\n", i, i)))
	}
	md := openMD(t, s, testBox)
	size0 := md.Messages()[0].Size
	if err := md.Commit(ctx, []int{0, 2}); err != nil {
		t.Fatal(err)
	}
	if md.Vaulted() != 2 {
		t.Errorf("Vaulted = %d, want 2", md.Vaulted())
	}
	md.Close()
	if n, _, err := s.Usage(ctx, testBox); err != nil || n != 1 {
		t.Fatalf("Usage = %d, %v: the vault must not count", n, err)
	}
	list, err := s.VaultList(ctx, testBox)
	if err != nil || len(list) != 2 {
		t.Fatalf("VaultList = %+v, %v", list, err)
	}
	e := list[0]
	if e.UID != uids[0] || e.Size != size0 || e.From != "Bob <bob@example.org>" || e.Subject != "note 0" || !e.Deleted.Equal(clock.t.Truncate(time.Second)) {
		t.Fatalf("vault entry %+v", e)
	}
	// Hostile input: an unknown UID restores nothing, not even the others.
	if _, err := s.VaultRestore(ctx, testBox, []string{uids[0], "../../etc"}, false); !errors.Is(err, ErrNotInVault) {
		t.Fatalf("restore of an unknown UID: %v", err)
	}
	if got := uidsOf(t, s, testBox); !slices.Equal(got, uids[1:2]) {
		t.Fatalf("mailbox after a refused restore: %v", got)
	}
	// Restore refused during a session.
	session := openMD(t, s, testBox)
	if _, err := s.VaultRestore(ctx, testBox, nil, true); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("restore during a session: %v", err)
	}
	session.Close()
	done, err := s.VaultRestore(ctx, testBox, []string{uids[0]}, false)
	if err != nil || len(done) != 1 {
		t.Fatalf("restore: %+v, %v", done, err)
	}
	if got := uidsOf(t, s, testBox); !slices.Equal(got, uids[:2]) {
		t.Fatalf("after restore %v, want %v", got, uids[:2])
	}
	md = openMD(t, s, testBox)
	if got := string(readMsg(t, md, 0)); got != "From: Bob <bob@example.org>\r\nSubject: note 0\r\n\r\nbody 0\r\n" {
		t.Fatalf("restored message %q", got)
	}
	md.Close()
	// Purge: not before vault_days, then for good.
	clock.advance(7*day - time.Second)
	if res, err := s.Sweep(ctx, testBox, SweepPolicy{Expire: -1, VaultKeep: 7 * day}); err != nil || res.Purged != 0 {
		t.Fatalf("purge before 7 days: %+v, %v", res, err)
	}
	clock.advance(time.Second)
	if res, err := s.Sweep(ctx, testBox, SweepPolicy{Expire: -1, VaultKeep: 7 * day}); err != nil || res.Purged != 1 {
		t.Fatalf("purge at 7 days: %+v, %v", res, err)
	}
	if list, _ := s.VaultList(ctx, testBox); len(list) != 0 {
		t.Fatalf("vault after purge: %+v", list)
	}
	// Foreign files in the vault are neither listed nor purged.
	foreign := filepath.Join(root, "example.test", "alice", vaultFolder, "notes.txt")
	os.WriteFile(foreign, []byte("x"), 0o600)
	clock.advance(100 * day)
	s.Sweep(ctx, testBox, SweepPolicy{Expire: -1, VaultKeep: day})
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("purge removed a foreign file: %v", err)
	}
}

// TestVaultJournalRecovery: a v3 journal left by a crash is completed
// into the vault, not by unlinking, with its recorded time.
func TestVaultJournalRecovery(t *testing.T) {
	s, _, _ := clockedStore(t)
	ctx := context.Background()
	a := mustDeliver(t, s, testBox, "Subject: a\n\nbody\n")
	mustDeliver(t, s, testBox, "Subject: b\n\nbody\n")
	dir, _ := mailboxDir(testBox)
	if err := s.writeJournal(dir, []string{a}, 1234567890); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RecoverJournals(ctx); err != nil || n != 1 {
		t.Fatalf("RecoverJournals = %d, %v", n, err)
	}
	list, err := s.VaultList(ctx, testBox)
	if err != nil || len(list) != 1 || list[0].UID != a || list[0].Deleted.Unix() != 1234567890 {
		t.Fatalf("vault after recovery: %+v, %v", list, err)
	}
	if got := uidsOf(t, s, testBox); len(got) != 1 || got[0] == a {
		t.Fatalf("mailbox after recovery: %v", got)
	}
	// A v3 journal whose vault line is damaged deletes nothing.
	for _, bad := range []string{
		journalHeaderVault + "\ndir \"example.test/alice/Maildir\"\nvault x\n\"a\"\nend\n",
		journalHeaderVault + "\ndir \"example.test/alice/Maildir\"\n\"a\"\nend\n",
		journalHeaderVault + "\ndir \"example.test/alice/Maildir\"\nvault -5\n\"a\"\nend\n",
	} {
		if _, _, _, ok := parseJournal([]byte(bad)); ok {
			t.Errorf("parseJournal accepted %q", bad)
		}
	}
}

// TestParseDownloads: the record round-trips; damage is refused with
// ErrDownloads and a reason, and a damaged record on disk is read as
// empty (nothing expires early).
func TestParseDownloads(t *testing.T) {
	in := map[string]int64{"1.M1P1Q1Rab.host": 100, "weird \"name\"\n": 200}
	got, err := parseDownloads(strings.NewReader(string(formatDownloads(in))))
	if err != nil || len(got) != 2 || got["weird \"name\"\n"] != 200 {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	for _, bad := range []string{
		"",
		"postino-downloaded v2\nend\n",
		downloadsHeader + "\n",
		downloadsHeader + "\n100 \"a\"\n",
		downloadsHeader + "\nx \"a\"\nend\n",
		downloadsHeader + "\n-1 \"a\"\nend\n",
		downloadsHeader + "\n100 a\nend\n",
		downloadsHeader + "\n100 \"\"\nend\n",
		downloadsHeader + "\nend\nmore\n",
		downloadsHeader + "\n100 \"" + strings.Repeat("a", 5000) + "\"\nend\n",
	} {
		if _, err := parseDownloads(strings.NewReader(bad)); !errors.Is(err, ErrDownloads) {
			t.Errorf("parseDownloads(%.40q) = %v, want ErrDownloads", bad, err)
		}
	}
	s, root, clock := clockedStore(t)
	mustDeliver(t, s, testBox, "Subject: a\n\nbody\n")
	os.WriteFile(filepath.Join(maildirPath(root), downloadsName), []byte("garbage"), 0o600)
	clock.advance(1000 * day)
	if res, err := s.Sweep(context.Background(), testBox, SweepPolicy{Expire: 0}); err != nil || res.Expired != 0 {
		t.Fatalf("sweep over a damaged record: %+v, %v", res, err)
	}
}

// FuzzParseDownloads: the download record parser never panics, and
// whatever it accepts formats back to something it reads the same.
func FuzzParseDownloads(f *testing.F) {
	f.Add([]byte(formatDownloads(map[string]int64{"1.M1P1Q1Rab.host": 100})))
	f.Add([]byte(downloadsHeader + "\nend\n"))
	f.Add([]byte(downloadsHeader + "\n5 \"a\\x00b\"\n3 \"a\\x00b\"\nend\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseDownloads(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		again, err := parseDownloads(strings.NewReader(string(formatDownloads(d))))
		if err != nil || len(again) != len(d) {
			t.Fatalf("reformatted record refused: %v", err)
		}
		for k, v := range d {
			if again[k] != v {
				t.Fatalf("%q: %d became %d", k, v, again[k])
			}
		}
	})
}

// sweepHelperEnv makes TestSweepCrashHelper run a sweep on a root.
const sweepHelperEnv = "POSTINO_MAILDIR_SWEEP_HELPER"

// TestSweepCrashHelper is the process TestSweepCrash kills: it sweeps
// testBox with the vault on and a clock far in the future.
func TestSweepCrashHelper(t *testing.T) {
	root := os.Getenv(sweepHelperEnv)
	if root == "" {
		return // only as TestSweepCrash's child process
	}
	s, err := New(root, nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	s.SetVault(true)
	s.SetClock(func() time.Time { return time.Now().Add(365 * day) })
	fmt.Println("sweeping")
	res, err := s.Sweep(context.Background(), testBox, SweepPolicy{Expire: day})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("expired", res.Expired)
	os.Exit(0)
}

// TestSweepCrash kills a process sweeping a mailbox of downloaded and
// undownloaded messages, with the vault on, at moments spread over the
// time a sweep takes (measured first), and checks after each kill, once
// the next opener completed the journal: either every downloaded message
// is gone or none is, every undownloaded message is still there, and
// every message that left the mailbox is in the vault (nothing is lost).
func TestSweepCrash(t *testing.T) {
	rounds := 12
	if n, err := strconv.Atoi(os.Getenv("CRASH_ROUNDS")); err == nil {
		rounds = n
	}
	const msgs = 600
	run := func(t *testing.T, root string, kill time.Duration) (killed bool, took time.Duration) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSweepCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), sweepHelperEnv+"="+root)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		if l, err := br.ReadString('\n'); err != nil || l != "sweeping\n" {
			cmd.Process.Kill()
			t.Fatalf("helper said %q, %v", l, err)
		}
		start := time.Now()
		if kill >= 0 {
			time.Sleep(kill)
			cmd.Process.Signal(syscall.SIGKILL)
		}
		rest, _ := bufio.NewReader(br).ReadString(0)
		err = cmd.Wait()
		took = time.Since(start)
		if kill < 0 && (err != nil || !strings.HasPrefix(rest, "expired ")) {
			t.Fatalf("helper: %v %q", err, rest)
		}
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled(), took
	}
	setup := func(t *testing.T) (root string, downloaded, kept map[string]bool) {
		s, root := newTestStore(t)
		s.SetClock(time.Now)
		ctx := context.Background()
		for i := range msgs {
			mustDeliver(t, s, testBox, fmt.Sprintf("Subject: %d\n\n%s\n", i, strings.Repeat("x", i)))
		}
		md := openMD(t, s, testBox)
		downloaded, kept = map[string]bool{}, map[string]bool{}
		var idx []int
		for i, m := range md.Messages() {
			if rand.IntN(2) == 0 {
				idx = append(idx, i)
				downloaded[m.UID] = true
			} else {
				kept[m.UID] = true
			}
		}
		if err := md.RecordDownloads(ctx, idx); err != nil {
			t.Fatal(err)
		}
		md.Close()
		s.Close()
		return root, downloaded, kept
	}
	root, _, _ := setup(t)
	_, full := run(t, root, -1)
	t.Logf("an uninterrupted sweep of %d messages took %v", msgs, full)
	killedRounds, midApply := 0, 0
	for r := range rounds {
		root, downloaded, kept := setup(t)
		at := time.Duration(rand.Int64N(int64(full) + 1))
		killed, _ := run(t, root, at)
		if killed {
			killedRounds++
		}
		// Seen before anything touches the Maildir again: a journal
		// means the kill landed while the sweep applied it.
		journals, _ := os.ReadDir(filepath.Join(root, journalDir))
		if len(journals) > 0 {
			midApply++
		}
		s, err := New(root, nil) // a new process: its opener completes the journal
		if err != nil {
			t.Fatal(err)
		}
		left := map[string]bool{}
		for _, u := range uidsOf(t, s, testBox) {
			left[u] = true
		}
		vault, err := s.VaultList(context.Background(), testBox)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		for u := range kept {
			if !left[u] {
				t.Fatalf("round %d (kill at %v): undownloaded message %s lost", r, at, u)
			}
		}
		gone := 0
		for u := range downloaded {
			if !left[u] {
				gone++
			}
		}
		if gone != 0 && gone != len(downloaded) {
			t.Fatalf("round %d (kill at %v): half a sweep: %d of %d downloaded messages gone", r, at, gone, len(downloaded))
		}
		if len(vault) != gone {
			t.Fatalf("round %d: %d messages gone but %d in the vault", r, gone, len(vault))
		}
		for _, e := range vault {
			if !downloaded[e.UID] {
				t.Fatalf("round %d: vault holds %s, which was not downloaded", r, e.UID)
			}
		}
		t.Logf("round %d: kill at %v (killed %v, journal left %v): %d of %d downloaded messages gone", r, at, killed, len(journals) > 0, gone, len(downloaded))
	}
	t.Logf("%d of %d rounds killed the sweep, %d of them while it applied its journal", killedRounds, rounds, midApply)
	if killedRounds == 0 {
		t.Error("no round killed the sweep")
	}
}

// FuzzParseJournal: the commit journal parser (v1, v2 and the vault's v3)
// never panics, and a journal it accepts names a valid Maildir (or none,
// for v1) and non-empty unique parts, with a positive vault time or none.
func FuzzParseJournal(f *testing.F) {
	f.Add([]byte(journalHeader + "\ndir \"example.test/alice/Maildir\"\n\"a\"\nend\n"))
	f.Add([]byte(journalHeaderVault + "\ndir \"example.test/alice/Maildir\"\nvault 1700000000\n\"a\"\n\"b\"\nend\n"))
	f.Add([]byte(journalHeaderV1 + "\n\"a\"\nend\n"))
	f.Add([]byte(journalHeaderVault + "\ndir \"../x/Maildir\"\nvault 1\nend\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir, bases, vaultAt, ok := parseJournal(data)
		if !ok {
			return
		}
		if dir != "" && !validMaildirDir(dir) {
			t.Fatalf("accepted Maildir %q", dir)
		}
		if vaultAt < 0 || (vaultAt > 0 && !strings.HasPrefix(string(data), journalHeaderVault)) {
			t.Fatalf("vault time %d", vaultAt)
		}
		for b := range bases {
			if b == "" {
				t.Fatal("empty unique part accepted")
			}
		}
	})
}

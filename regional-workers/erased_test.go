package workers

import (
	"testing"
	"time"
)

// An erased account's events stored before its uninstall are dropped when
// they reach an attempt after the erase (taken before it deleted them from
// the stream); later ones, a new install's, are not. While the erase runs,
// the account's events wait. A worker forgets the account after
// erasedMemory.
func TestErasedAccountsDropsOnlyEarlierEvents(t *testing.T) {
	var e erasures
	before := func(account string, seq uint64) bool {
		_, erased := e.of(account, seq)
		return erased
	}
	erase := func(account string, seq uint64) {
		e.begin(account)
		if erasing, _ := e.of(account, seq+1); !erasing {
			t.Errorf("%s not marked as being erased", account)
		}
		e.end(account, seq, true)
	}
	if before("acct", 5) {
		t.Fatal("nothing erased yet: an event dropped")
	}
	erase("acct", 10)
	erase("acct", 7) // an older uninstall (Zoom's duplicate): the later stays
	for seq, want := range map[uint64]bool{5: true, 9: true, 10: false, 11: false, 0: false} {
		if got := before("acct", seq); got != want {
			t.Errorf("event at %d: dropped %v, want %v", seq, got, want)
		}
	}
	if erasing, _ := e.of("acct", 11); erasing {
		t.Error("still marked as being erased after the erase")
	}
	if before("other", 5) {
		t.Error("another account's event dropped")
	}
	e.begin("failed")
	e.end("failed", 4, false) // the erase failed before its events were deleted
	if erasing, erased := e.of("failed", 2); erasing || erased {
		t.Errorf("a failed erase: erasing %v, erased %v, want neither", erasing, erased)
	}
	e.m.Store("acct", erasure{seq: 10, at: time.Now().Add(-erasedMemory - time.Second)})
	erase("other", 3)
	if before("acct", 5) {
		t.Error("remembered past erasedMemory")
	}
	if !before("other", 2) {
		t.Error("the account just erased forgotten")
	}
}

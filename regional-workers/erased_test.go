package workers

import (
	"testing"
	"time"
)

// An erased account's events stored before its uninstall are dropped when
// they reach an attempt after the erase (taken before it deleted them from
// the stream); later ones, a new install's, are not. A worker forgets the
// account after erasedMemory.
func TestErasedAccountsDropsOnlyEarlierEvents(t *testing.T) {
	var e erasedAccounts
	if e.before("acct", 5) {
		t.Fatal("nothing erased yet: an event dropped")
	}
	e.add("acct", 10)
	e.add("acct", 7) // an older uninstall (Zoom's duplicate): the later stays
	for seq, want := range map[uint64]bool{5: true, 9: true, 10: false, 11: false, 0: false} {
		if got := e.before("acct", seq); got != want {
			t.Errorf("event at %d: dropped %v, want %v", seq, got, want)
		}
	}
	if e.before("other", 5) {
		t.Error("another account's event dropped")
	}
	e.accounts["acct"] = erasedAccount{seq: 10, at: time.Now().Add(-erasedMemory - time.Second)}
	e.add("other", 3)
	if e.before("acct", 5) {
		t.Error("remembered past erasedMemory")
	}
	if !e.before("other", 2) {
		t.Error("the account just erased forgotten")
	}
}

package dlq

import "time"

// SetNow makes s read the time from now: the filters' Since and Before are
// relative to it.
func SetNow(s *Store, now func() time.Time) { s.now = now }

package sandbox

import (
	"context"
	"strconv"
)

// touch records a change to what the developer chat shows, waking the
// pages waiting for one. Call with s.mu held.
func (s *Sandbox) touch() {
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
}

// versionString is the current version, as the chat's pages see it. Call
// with s.mu held.
func (s *Sandbox) versionString() string { return strconv.FormatUint(s.version, 10) }

// waitChange returns once the sandbox's version differs from seen, or ctx
// ends.
func (s *Sandbox) waitChange(ctx context.Context, seen string) {
	s.mu.Lock()
	if s.versionString() != seen {
		s.mu.Unlock()
		return
	}
	ch := s.changed
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

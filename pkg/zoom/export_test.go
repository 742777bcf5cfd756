package zoom

import "time"

// SetVerifierNow replaces the clock a Verifier checks timestamps against.
func SetVerifierNow(v *Verifier, now func() time.Time) { v.now = now }

// SetClientNow replaces the clock a Client ages its token with.
func SetClientNow(c *Client, now func() time.Time) { c.now = now }

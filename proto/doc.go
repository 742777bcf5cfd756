// Package proto is geomux's wire contract: the NATS subjects and streams the
// services talk over, the message headers they set, the account directory
// record, and the JSON a regional backend receives and answers.
//
// Everything here is shared by ingress, router and the regional workers, and
// by anyone who writes tooling against a running geomux. Changing a name here
// changes the wire format: treat it like a public API.
package proto

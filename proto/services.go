package proto

// geomux's request/reply services, served with nats.go's micro package (so
// `nats micro ls` lists them): the router's directory service, asked by an
// ingress that does not hold the directory; each region's vault service,
// which keeps the tokens an install hands over; and each region's service
// answering the hub's questions about the region.

// ServicesVersion is the version the services announce.
const ServicesVersion = "1.0.0"

// DirectoryService is the router's service on DirectorySubject, in queue
// group DirectoryService.
const DirectoryService = "geomux-directory"

// Directory operations (DirectoryRequest.Op).
const (
	// DirectoryGet reads an account's record.
	DirectoryGet = "get"
	// DirectoryInstall records the account in its region and hands its
	// tokens to that region's vault; see DirectoryRequest.
	DirectoryInstall = "install"
)

// DirectoryRequest asks the directory service.
type DirectoryRequest struct {
	Op     string        `json:"op"`
	Record AccountRecord `json:"record"`
	// Handover, for DirectoryInstall, is the account's tokens.
	Handover *TokenHandover `json:"handover,omitempty"`
}

// Directory answer codes (DirectoryReply.Code).
const (
	DirectoryNotFound = "not_found"
	// DirectoryConflict: the account lives in another region
	// (DirectoryReply.Region).
	DirectoryConflict = "conflict"
)

// DirectoryReply is the directory service's answer.
type DirectoryReply struct {
	Record *AccountRecord `json:"record,omitempty"`
	// Error, without details, says the request failed.
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
	Region string `json:"region,omitempty"`
}

// RegionService is a region's workers' service answering the hub's
// questions about the region: its held accounts (RegionHoldsSubject, queue
// group HoldsQueue) and an account's inventory (RegionInventorySubject,
// queue group InventoryQueue).
const RegionService = "geomux-region"

// VaultService is a region's vault service on RegionVaultSubject, in queue
// group VaultService: one of the region's workers takes each handover.
const VaultService = "geomux-vault"

// Tokens are a Zoom user's OAuth tokens (authorization_code grant), as Zoom
// returns them at install and at each refresh. A backend is given the access
// part (UserToken); the refresh token stays in the region's vault.
type Tokens struct {
	UserToken
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope,omitempty"`
}

// TokenHandover is what an install hands the account's region: its tokens,
// to keep. It travels in a request to the vault service, in memory only.
type TokenHandover struct {
	AccountID string `json:"account_id"`
	Tokens
	// UserID is the Zoom user who installed the app.
	UserID string `json:"user_id,omitempty"`
}

// VaultReply is the vault service's answer to a handover.
type VaultReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

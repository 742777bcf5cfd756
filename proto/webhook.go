package proto

// WebhookPath is where the ingress takes Zoom's events for the default app:
// its Bot Endpoint URL is https://<host>/zoom/webhook. Another app's is
// WebhookPath + "/" + its name.
const WebhookPath = "/zoom/webhook"

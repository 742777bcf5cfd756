package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/httpserver"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

type sendFlags struct {
	config  string
	account string
	text    string
	url     string
	userJID string
	toJID   string
	event   string
	app     string
}

func newSendCmd() *cobra.Command {
	var f sendFlags
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Sign and post an event to the ingress, as Zoom would",
		Long: `Send a bot_notification event (a user writing to the chatbot), or an
app_deauthorized event (the account uninstalling the app), to a running geomux
ingress, signed with the first of the app's webhook secret tokens exactly as
Zoom signs it. Use it to try the round trip without Zoom.

--app sends as one of zoom.apps, to its Bot Endpoint URL (/zoom/webhook/<name>);
without it, as the default app (/zoom/webhook).`,
		Example: `  geomux send --config deploy/local/geomux.yaml --account acct-eu-1 --text "hi"
  geomux send --config deploy/local/geomux.yaml --app eu-bot --account acct-eu-2 --text "hi"
  geomux send --config deploy/local/geomux.yaml --account acct-eu-1 --event app_deauthorized`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.account == "" {
				return usagef("--account is required: the Zoom account id the event comes from")
			}
			if !proto.ValidAccountID(f.account) {
				return usagef("--account %q is not a Zoom account id (letters, digits, '-', '_', '=')", f.account)
			}
			switch f.event {
			case zoom.EventBotNotification:
				if f.text == "" {
					return usagef("--text is required: what the user writes to the bot")
				}
			case zoom.EventAppDeauthorized:
			default:
				return usagef("--event %q is not one of bot_notification, app_deauthorized", f.event)
			}
			cfg, err := loadConfig(f.config, config.RoleIngress)
			if err != nil {
				return err
			}
			if f.app != "" {
				if _, ok := cfg.Zoom.App(f.app); !ok {
					return usagef("--app %q is not an app of %s (apps: %s)", f.app, f.config, strings.Join(appNames(cfg), ", "))
				}
			}
			return send(cmd.OutOrStdout(), cfg, f)
		},
	}
	configFlag(cmd, &f.config)
	cmd.Flags().StringVarP(&f.account, "account", "a", "", "Zoom account id the event belongs to (required)")
	cmd.Flags().StringVar(&f.text, "text", "", "what the user writes to the bot (required for bot_notification)")
	cmd.Flags().StringVar(&f.event, "event", zoom.EventBotNotification, "the event to send: bot_notification (a user writes to the bot) or app_deauthorized (the account uninstalls the app)")
	cmd.Flags().StringVar(&f.app, "app", "", "send as this app of zoom.apps (default: the default app)")
	cmd.Flags().StringVar(&f.url, "url", "", "webhook URL (default http://<ingress.listen>/zoom/webhook[/<app>])")
	cmd.Flags().StringVar(&f.userJID, "user-jid", "geomux.user@xmpp.zoom.us", "JID of the user writing")
	cmd.Flags().StringVar(&f.toJID, "to-jid", "", "JID the message was written to (default: the user's, a direct message)")
	return cmd
}

// appNames lists the config's apps.
func appNames(cfg config.Config) []string {
	var names []string
	for _, a := range cfg.Zoom.AllApps() {
		names = append(names, a.Name)
	}
	return names
}

func send(out io.Writer, cfg config.Config, f sendFlags) error {
	app := cfg.Zoom.DefaultApp()
	if f.app != "" {
		app, _ = cfg.Zoom.App(f.app)
	}
	url := f.url
	if url == "" {
		url = httpserver.LocalURL(cfg.Ingress.Listen) + ingress.WebhookPath
		if f.app != "" {
			url += "/" + app.Name
		}
	}
	toJID := f.toJID
	if toJID == "" {
		toJID = f.userJID
	}
	now := time.Now()
	var ev map[string]any
	switch f.event {
	case zoom.EventBotNotification:
		ev = map[string]any{
			"event":    zoom.EventBotNotification,
			"event_ts": now.UnixMilli(),
			"payload": map[string]any{
				"accountId":   f.account,
				"channelName": "geomux send",
				"cmd":         f.text,
				"name":        "geomux",
				"robotJid":    app.BotJID,
				"timestamp":   now.UnixMilli(),
				"toJid":       toJID,
				"userId":      "geomux-send",
				"userJid":     f.userJID,
				"userName":    "geomux send",
			},
		}
	case zoom.EventAppDeauthorized: // as Zoom sends it (its field report, 2025)
		ev = map[string]any{
			"event":    zoom.EventAppDeauthorized,
			"event_ts": now.UnixMilli(),
			"payload": map[string]any{
				"account_id":           f.account,
				"client_id":            app.ClientID,
				"deauthorization_time": now.UTC().Format("2006-01-02T15:04:05.000Z"),
				"signature":            fmt.Sprintf("%x", now.UnixNano()),
				"user_data_retention":  nil,
				"user_id":              "geomux-send",
			},
		}
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return usagef("--url %q: %v", url, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Zoom Marketplace/1.0a (geomux send)")
	req.Header.Set(zoom.HeaderTimestamp, ts)
	req.Header.Set(zoom.HeaderSignature, zoom.Sign(app.WebhookSecretTokens[0], ts, body))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the ingress at %s (is geomux running?): %v", url, unwrapURLError(err))
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("ingress answered %s: %s", resp.Status, strings.TrimSpace(string(answer)))
	}
	fmt.Fprintf(out, "sent %s %s for account %s: %s\n", f.event, proto.EventID(body), f.account, resp.Status)
	return nil
}

// unwrapURLError drops the method and URL net/http puts before a dial error:
// the message already names the URL.
func unwrapURLError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op
	}
	return err
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/proto"
)

// adminFlags are the flags of the commands that ask the admin API.
type adminFlags struct {
	config string
	admin  string
	json   bool
}

// api loads the config and finds the admin API to ask.
func (f adminFlags) api() (cfg config.Config, base string, err error) {
	if cfg, err = loadConfig(f.config, config.RoleTool); err != nil {
		return cfg, "", err
	}
	base, err = adminBase(cfg, f.admin)
	return cfg, base, err
}

type accountsFlags struct {
	adminFlags
	conflicts bool
}

func newAccountsCmd() *cobra.Command {
	var f accountsFlags
	cmd := &cobra.Command{
		Use:   "accounts",
		Short: "List the accounts' regions, the accounts Zoom's daily limit holds, and conflicts",
		Long: `List every account of the directory with its region, then the accounts
whose replies are held until Zoom's daily message limit resets (and until
when), then every conflict:
an account whose events came through an app pinned to one region (zoom.apps
region) while the directory gives the account another. The router parks
such events rather than choose; settle a conflict by moving the account
(PUT /admin/v1/accounts/<id> {"region":"<the app's region>"}) or the app's
pin, and the parked events flow.

It asks the admin API of the process that runs the router (admin.listen,
with admin.token).`,
		Example: `  geomux accounts --config deploy/local/geomux.yaml
  geomux accounts --config hub-router.yaml --admin http://router.internal:8081 --conflicts --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, base, err := f.api()
			if err != nil {
				return err
			}
			return listAccounts(cmd.OutOrStdout(), base, cfg.Admin.Token, f)
		},
	}
	cmd.AddCommand(newInventoryCmd())
	configFlag(cmd, &f.config)
	cmd.Flags().StringVar(&f.admin, "admin", "", "the admin API of the router (default http://<admin.listen>)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	cmd.Flags().BoolVar(&f.conflicts, "conflicts", false, "list the conflicts only")
	return cmd
}

// adminBase is the URL of the router's admin API: --admin, or
// admin.listen.
func adminBase(cfg config.Config, flag string) (string, error) {
	if cfg.Admin.Token == "" {
		return "", usagef("admin.token is required to ask the admin API (set it in the config or GEOMUX_ADMIN_TOKEN)")
	}
	base := flag
	if base == "" {
		if cfg.Admin.Listen == "" {
			return "", usagef("admin.listen is empty: pass --admin with the router's admin URL, e.g. http://127.0.0.1:8081")
		}
		host, port, _ := net.SplitHostPort(cfg.Admin.Listen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	return strings.TrimRight(base, "/"), nil
}

func listAccounts(out io.Writer, base, token string, f accountsFlags) error {
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string, v any) error {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			return usagef("--admin %q: %v", base, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("cannot reach the admin API at %s (is geomux running, with the router?): %v", base, unwrapURLError(err))
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("admin API %s answered %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
		}
		return json.Unmarshal(body, v)
	}
	var accounts struct {
		Accounts []proto.AccountRecord `json:"accounts"`
	}
	var conflicts struct {
		Conflicts []directory.Conflict `json:"conflicts"`
	}
	var holds struct {
		Holds      []directory.Hold `json:"holds"`
		Unanswered []string         `json:"unanswered"`
	}
	if !f.conflicts {
		if err := get("/admin/v1/accounts", &accounts); err != nil {
			return err
		}
	}
	if err := get("/admin/v1/conflicts", &conflicts); err != nil {
		return err
	}
	var unclaimed struct {
		Channels []directory.ParkedChannel `json:"channels"`
		Events   uint64                    `json:"events"`
	}
	if !f.conflicts {
		if err := get("/admin/v1/holds", &holds); err != nil {
			return err
		}
		if err := get("/admin/v1/parked/without-account", &unclaimed); err != nil {
			return err
		}
	}
	if unclaimed.Channels == nil {
		unclaimed.Channels = []directory.ParkedChannel{}
	}
	if holds.Holds == nil {
		holds.Holds = []directory.Hold{}
	}
	if accounts.Accounts == nil {
		accounts.Accounts = []proto.AccountRecord{}
	}
	if conflicts.Conflicts == nil {
		conflicts.Conflicts = []directory.Conflict{}
	}
	if f.json {
		if f.conflicts {
			return printJSON(out, map[string]any{"conflicts": conflicts.Conflicts})
		}
		v := map[string]any{"accounts": accounts.Accounts, "conflicts": conflicts.Conflicts, "holds": holds.Holds, "parked_without_account": unclaimed.Channels}
		if len(holds.Unanswered) > 0 {
			v["holds_unanswered"] = holds.Unanswered
		}
		return printJSON(out, v)
	}
	if !f.conflicts {
		if err := printRows(out, false, accounts.Accounts, "ACCOUNT\tREGION\tUPDATED", func(a proto.AccountRecord) string {
			return fmt.Sprintf("%s\t%s\t%s", a.AccountID, a.Region, a.UpdatedAt.UTC().Format(time.RFC3339))
		}); err != nil {
			return err
		}
		fmt.Fprintf(out, "%d accounts with a region\n", len(accounts.Accounts))
		if err := printHolds(out, holds.Holds, holds.Unanswered); err != nil {
			return err
		}
		if unclaimed.Events > 0 {
			fmt.Fprintf(out, "%d events parked without an account, in %d channels (an external user's app mention; routed once an event of the channel names its account, e.g. team_chat.channel_app_added)\n",
				unclaimed.Events, len(unclaimed.Channels))
		}
	}
	if len(conflicts.Conflicts) == 0 {
		fmt.Fprintln(out, "no conflicts")
		return nil
	}
	if !f.conflicts {
		fmt.Fprintln(out)
	}
	if err := printRows(out, false, conflicts.Conflicts, "CONFLICT: ACCOUNT\tAPP (PINNED TO)\tDIRECTORY SAYS\tEVENTS PARKED\tLAST SEEN", func(c directory.Conflict) string {
		return fmt.Sprintf("%s\t%s (%s)\t%s\t%d\t%s", c.AccountID, c.App, c.AppRegion, c.DirectoryRegion, c.Events, c.LastSeen.UTC().Format(time.RFC3339))
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d conflicts: their events are parked. Settle one by moving the account to its app's region (PUT /admin/v1/accounts/<id>) or by changing the app's pin; the events then flow.\n", len(conflicts.Conflicts))
	return nil
}

// printHolds lists the accounts whose replies wait for Zoom's daily limit.
func printHolds(out io.Writer, holds []directory.Hold, unanswered []string) error {
	for _, u := range unanswered {
		fmt.Fprintf(out, "held accounts of region %s\n", u)
	}
	if len(holds) == 0 {
		fmt.Fprintln(out, "no account held by Zoom's daily limit")
		return nil
	}
	fmt.Fprintln(out)
	if err := printRows(out, false, holds, "HELD: ACCOUNT\tREGION\tUNTIL\tPACE (MSG/S)", func(h directory.Hold) string {
		return fmt.Sprintf("%s\t%s\t%s\t%.1f", h.AccountID, h.Region, h.HeldUntil.UTC().Format(time.RFC3339), h.Rate)
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d accounts held: Zoom's daily message limit is reached; their replies go out, in order, when it resets.\n", len(holds))
	return nil
}

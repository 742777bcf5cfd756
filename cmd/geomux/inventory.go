package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/proto"
)

func newInventoryCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "inventory ACCOUNT",
		Short: "Show what every region holds of an account (counts, no content)",
		Long: `Ask every region what it holds of a Zoom account: its tokens, dead
letters, reply records, events waiting in the region (parked_events), Zoom
pace, and the audit records that name it; and the hub, its events parked
for lack of a region. Each region counts in the region: no content leaves
it. After an uninstall, every count but audit_entries is 0 in every region
(the audit records are the proof of the erase).

It asks the admin API of the process that runs the router (admin.listen,
with admin.token). It exits 1 when a region or the hub cannot be asked,
after printing what the others said.`,
		Example: `  geomux accounts inventory AbCdEf123 --config deploy/local/geomux.yaml
  geomux accounts inventory AbCdEf123 --config hub-router.yaml --admin http://router.internal:8081 --json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("give one Zoom account id, e.g. geomux accounts inventory AbCdEf123")
			}
			if !proto.ValidAccountID(args[0]) {
				return usagef("%q is not a Zoom account id (letters, digits, '-', '_', '=')", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, base, err := f.api()
			if err != nil {
				return err
			}
			inv, err := fetchInventory(base, cfg.Admin.Token, args[0])
			if err != nil {
				return err
			}
			if err := printInventory(cmd.OutOrStdout(), inv, f.json); err != nil {
				return err
			}
			if !inv.Complete() {
				return fmt.Errorf("the inventory of %s is incomplete: %s could not be asked", inv.AccountID, strings.Join(sortedKeys(inv.Unanswered), ", "))
			}
			return nil
		},
	}
	configFlag(cmd, &f.config)
	cmd.Flags().StringVar(&f.admin, "admin", "", "the admin API of the router (default http://<admin.listen>)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	return cmd
}

// fetchInventory asks the admin API; a 502 carries an incomplete inventory.
func fetchInventory(base, token, account string) (directory.AccountInventory, error) {
	var inv directory.AccountInventory
	path := "/admin/v1/accounts/" + url.PathEscape(account) + "/inventory"
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return inv, usagef("--admin %q: %v", base, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return inv, fmt.Errorf("cannot reach the admin API at %s (is geomux running, with the router?): %v", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadGateway {
		return inv, fmt.Errorf("admin API %s answered %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &inv); err != nil || inv.AccountID == "" {
		return inv, errors.New("admin API " + path + " answered something that is not an inventory (is the router older than this geomux?)")
	}
	return inv, nil
}

func printInventory(out io.Writer, inv directory.AccountInventory, asJSON bool) error {
	if inv.Regions == nil {
		inv.Regions = map[string]proto.Inventory{}
	}
	if asJSON {
		return printJSON(out, inv)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tTOKENS\tDEAD LETTERS\tREPLY RECORDS\tPARKED EVENTS\tPACE\tAUDIT ENTRIES")
	for _, r := range sortedKeys(inv.Regions) {
		i := inv.Regions[r]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%d\n", r, yesNo(i.Tokens), i.DeadLetters, i.ReplyRecords, i.ParkedEvents, yesNo(i.Pace), i.AuditEntries)
	}
	if _, ok := inv.Unanswered["hub"]; !ok {
		fmt.Fprintf(tw, "(hub)\t-\t-\t-\t%d\t-\t-\n", inv.Hub.ParkedEvents)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range sortedKeys(inv.Unanswered) {
		fmt.Fprintf(out, "%s: not asked: %s\n", r, inv.Unanswered[r])
	}
	switch {
	case !inv.Complete():
	case inv.Empty():
		fmt.Fprintf(out, "geomux holds nothing of account %s in any region (audit records aside)\n", inv.AccountID)
	default:
		fmt.Fprintf(out, "geomux holds data of account %s\n", inv.AccountID)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// dlqFlags are the flags every dlq subcommand shares.
type dlqFlags struct {
	config string
	region string
}

func (f *dlqFlags) add(cmd *cobra.Command) {
	configFlag(cmd, &f.config)
	cmd.Flags().StringVarP(&f.region, "region", "r", "", "the region whose dead letters to work on (required); the command talks to that region's NATS only")
}

// open loads the config and opens the region's dead-letter store.
func (f *dlqFlags) open(ctx context.Context) (*dlq.Store, func(), error) {
	if f.region == "" {
		return nil, nil, usagef("--region is required: dead letters are kept, and handled, per region")
	}
	cfg, err := loadConfig(f.config, config.RoleTool)
	if err != nil {
		return nil, nil, err
	}
	if err := (config.Target{Name: config.TargetWorker, Region: f.region}).Check(cfg); err != nil {
		return nil, nil, usageError{err}
	}
	region, _ := cfg.Region(f.region)
	nc, js, err := cliJetStream(cfg.NATS.ForRegion(region))
	if err != nil {
		return nil, nil, err
	}
	s, err := dlq.Open(ctx, js, f.region)
	if err != nil {
		nc.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("NATS did not answer: is JetStream enabled there? (%v)", err)
		}
		return nil, nil, err
	}
	return s, func() { _ = nc.Drain() }, nil
}

// withStore runs fn with the region's store, the whole bounded by timeout.
func (f *dlqFlags) withStore(cmd *cobra.Command, timeout time.Duration, fn func(context.Context, *dlq.Store) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	s, closeFn, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(ctx, s)
}

// printJSON prints v as indented JSON.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// cliSystems connects to the hub's NATS and to each region's own system:
// their JetStream by name ("hub", or the region's), the hub's first. The
// caller calls closeAll.
func cliSystems(cfg config.Config) (names []string, systems map[string]jetstream.JetStream, closeAll func(), err error) {
	var conns []*nats.Conn
	closeAll = func() {
		for _, nc := range conns {
			nc.Close()
		}
	}
	hub, hubJS, err := cliJetStream(cfg.NATS)
	if err != nil {
		return nil, nil, closeAll, err
	}
	conns = append(conns, hub)
	names, systems = []string{"hub"}, map[string]jetstream.JetStream{"hub": hubJS}
	for _, r := range cfg.Regions {
		if !r.NATS.Separate() {
			continue
		}
		nc, js, err := cliJetStream(cfg.NATS.ForRegion(r))
		if err != nil {
			return nil, nil, closeAll, fmt.Errorf("region %s: %w", r.Name, err)
		}
		conns = append(conns, nc)
		names, systems[r.Name] = append(names, r.Name), js
	}
	return names, systems, closeAll, nil
}

// printRows prints items as JSON (an empty list rather than null) or as a
// table: header, then a row per item (tab-separated columns).
func printRows[T any](out io.Writer, asJSON bool, items []T, header string, row func(T) string) error {
	if asJSON {
		if items == nil {
			items = []T{}
		}
		return printJSON(out, items)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

// cliJetStream connects to the NATS of a config (connectCLI) and returns
// its JetStream; the caller closes the connection.
func cliJetStream(c config.NATS) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := connectCLI(c)
	if err != nil {
		return nil, nil, err
	}
	js, err := natsfx.NewJetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// connectCLI connects to the NATS of a config: nats.url, or the embedded
// server's nats.listen when geomux runs on this machine.
func connectCLI(c config.NATS) (*nats.Conn, error) {
	url := c.URL
	if url == "" {
		if c.Listen == "" {
			return nil, usagef("the config has neither nats.url nor nats.listen: the CLI cannot reach NATS")
		}
		url = "nats://" + c.Listen
	}
	c.URL = url
	c.ConnectTimeout = config.Duration(5 * time.Second)
	c = natsx.WithLocalAuth(c, natsx.RoleOperator)
	nc, err := natsx.Connect(c, nil, "geomux-cli", zap.NewNop())
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) && c.Auth == (config.NATSAuth{}) {
			return nil, fmt.Errorf("%v: the embedded server admits only its own keys; run the CLI with geomux's config, whose nats.store_dir holds them (%s)", err, natsx.AuthDir(c.StoreDir))
		}
		return nil, fmt.Errorf("%v (is geomux running, and is this the region's NATS?)", err)
	}
	return nc, nil
}

// selection reads the entries a replay or purge names.
type selection struct {
	all     bool
	account string
	since   time.Duration
	before  time.Duration
	ids     []uint64
}

func (s selection) filter() dlq.Filter {
	return dlq.Filter{IDs: s.ids, Account: s.account, Since: s.since, Before: s.before}
}

func (s selection) String() string {
	var parts []string
	if s.all {
		parts = append(parts, "--all")
	}
	if s.account != "" {
		parts = append(parts, "--account "+s.account)
	}
	if s.since > 0 {
		parts = append(parts, "--since "+s.since.String())
	}
	if s.before > 0 {
		parts = append(parts, "--before "+s.before.String())
	}
	for _, id := range s.ids {
		parts = append(parts, strconv.FormatUint(id, 10))
	}
	return strings.Join(parts, " ")
}

func parseIDs(args []string) ([]uint64, error) {
	ids := make([]uint64, 0, len(args))
	for _, a := range args {
		id, err := strconv.ParseUint(a, 10, 64)
		if err != nil || id == 0 {
			return nil, usagef("%q is not a dead-letter id (the number in the ID column of geomux dlq list)", a)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge a region's dead letters",
		Long: `Events a region's workers gave up on (a permanent failure, or retry.max_attempts
failed attempts) are kept in that region's dead-letter stream, with why they
failed. These commands talk to the region's NATS only: the entries never leave
the region. Every replay and purge is recorded in the region (geomux dlq history).`,
	}
	cmd.AddCommand(newDLQListCmd(), newDLQShowCmd(), newDLQReplayCmd(), newDLQPurgeCmd(), newDLQHistoryCmd())
	return cmd
}

func newDLQListCmd() *cobra.Command {
	var f dlqFlags
	var account string
	var since time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List a region's dead letters",
		Example: "  geomux dlq list --config deploy/local/geomux.yaml --region eu --since 24h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withStore(cmd, time.Minute, func(ctx context.Context, s *dlq.Store) error {
				return list(ctx, cmd.OutOrStdout(), s, dlq.Filter{Account: account, Since: since}, f.region, asJSON)
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&account, "account", "", "only this Zoom account's entries")
	cmd.Flags().DurationVar(&since, "since", 0, "only entries dead-lettered within this long, e.g. 24h")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array instead of a table")
	return cmd
}

func list(ctx context.Context, out io.Writer, s *dlq.Store, filter dlq.Filter, region string, asJSON bool) error {
	entries, err := s.List(ctx, filter)
	if err != nil {
		return err
	}
	now := time.Now()
	if err := printRows(out, asJSON, entries, "ID\tACCOUNT\tEVENT\tREASON\tATTEMPTS\tAGE\tERROR", func(e dlq.Entry) string {
		return fmt.Sprintf("%d\t%s\t%s\t%s\t%d\t%s\t%s", e.ID, e.AccountID, e.EventType, e.Reason, e.Attempts,
			age(now.Sub(e.DeadAt)), truncate(e.Error, 60))
	}); err != nil || asJSON {
		return err
	}
	fmt.Fprintf(out, "%d dead %s in region %s\n", len(entries), plural(len(entries), "letter", "letters"), region)
	return nil
}

func newDLQShowCmd() *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show one dead letter, payload included",
		Example: "  geomux dlq show --config deploy/local/geomux.yaml --region eu 17",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			return f.withStore(cmd, 30*time.Second, func(ctx context.Context, s *dlq.Store) error {
				e, err := s.Get(ctx, ids[0])
				if errors.Is(err, dlq.ErrNotFound) {
					return fmt.Errorf("no dead letter %d in region %s (geomux dlq list shows the ids)", ids[0], f.region)
				}
				if err != nil {
					return err
				}
				// The payload is printed as the JSON it is, not as base64.
				type shown struct {
					dlq.Entry
					Payload json.RawMessage `json:"payload"`
				}
				p := json.RawMessage(e.Payload)
				if !json.Valid(p) {
					p, _ = json.Marshal(string(e.Payload))
				}
				return printJSON(cmd.OutOrStdout(), shown{Entry: e, Payload: p})
			})
		},
	}
	f.add(cmd)
	return cmd
}

// addSelection adds the flags that select entries to act on.
func addSelection(cmd *cobra.Command, s *selection, withSince bool) {
	cmd.Flags().BoolVar(&s.all, "all", false, "every entry of the region")
	if withSince {
		cmd.Flags().StringVar(&s.account, "account", "", "the entries of this Zoom account")
		cmd.Flags().DurationVar(&s.since, "since", 0, "the entries dead-lettered within this long, e.g. 2h")
	} else {
		cmd.Flags().DurationVar(&s.before, "before", 0, "the entries dead-lettered more than this long ago, e.g. 168h")
	}
}

// resolve checks that exactly one kind of selection was made: ids, --all,
// --account/--since (together or not), or --before.
func (s *selection) resolve(args []string, kinds string) error {
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	s.ids = ids
	n := 0
	for _, set := range []bool{len(ids) > 0, s.all, s.account != "" || s.since > 0, s.before > 0} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return usagef("say which entries: %s", kinds)
	case n > 1:
		return usagef("choose one of %s", kinds)
	}
	return nil
}

func newDLQReplayCmd() *cobra.Command {
	var f dlqFlags
	var sel selection
	var dryRun bool
	var as string
	cmd := &cobra.Command{
		Use:   "replay (ID... | --all | --account A | --since DURATION)",
		Short: "Put dead letters back so that the region's worker handles them again",
		Long: `Put dead letters back on the region's events subject, so that the region's
worker handles them again; each entry leaves the queue once it is back. Replies
that already went out are not sent again.`,
		Example: `  geomux dlq replay --config deploy/local/geomux.yaml --region eu 17 18
  geomux dlq replay --config deploy/local/geomux.yaml --region eu --account gVcjZnWWRLWvv_GtyGuaxg --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sel.resolve(args, "ID..., --all, or --account/--since"); err != nil {
				return err
			}
			return act(cmd, &f, sel, "replay", dryRun, true, as, (*dlq.Store).Replay)
		},
	}
	f.add(cmd)
	addSelection(cmd, &sel, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say how many entries would be replayed")
	cmd.Flags().StringVar(&as, "as", defaultOperator(), "who is running this, for the region's record")
	return cmd
}

func newDLQPurgeCmd() *cobra.Command {
	var f dlqFlags
	var sel selection
	var yes bool
	var as string
	cmd := &cobra.Command{
		Use:     "purge (ID... | --all | --before DURATION)",
		Short:   "Delete dead letters for good",
		Example: "  geomux dlq purge --config deploy/local/geomux.yaml --region eu --before 168h",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sel.resolve(args, "ID..., --all, or --before"); err != nil {
				return err
			}
			return act(cmd, &f, sel, "purge", false, yes, as, (*dlq.Store).Purge)
		},
	}
	f.add(cmd)
	addSelection(cmd, &sel, false)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&as, "as", defaultOperator(), "who is running this, for the region's record")
	return cmd
}

// act replays or purges the selected entries, one by one, and records what
// it did in the region.
func act(cmd *cobra.Command, f *dlqFlags, sel selection, verb string, dryRun, confirmed bool, as string,
	do func(*dlq.Store, context.Context, uint64) error) error {
	ctx := cmd.Context()
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, closeFn, err := f.open(lctx)
	if err != nil {
		return err
	}
	defer closeFn()
	entries, err := s.List(lctx, sel.filter())
	if errors.Is(err, dlq.ErrNotFound) {
		return fmt.Errorf("%v in region %s (geomux dlq list shows the ids)", err, f.region)
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if dryRun {
		fmt.Fprintf(out, "would %s %d dead %s of region %s\n", verb, len(entries), plural(len(entries), "letter", "letters"), f.region)
		return nil
	}
	if len(entries) == 0 {
		fmt.Fprintf(out, "no dead letters of region %s match %s\n", f.region, sel)
		return nil
	}
	if !confirmed {
		if err := confirm(cmd, fmt.Sprintf("%s %d dead %s of region %s for good?", strings.ToUpper(verb[:1])+verb[1:], len(entries), plural(len(entries), "letter", "letters"), f.region)); err != nil {
			return err
		}
	}
	var bar *progressbar.ProgressBar
	if w, ok := out.(*os.File); ok && term.IsTerminal(int(w.Fd())) && len(entries) > 20 {
		bar = progressbar.NewOptions(len(entries), progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(verb), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
	}
	rec := dlq.Action{Action: verb, Operator: as, At: time.Now().UTC(), Selection: sel.String()}
	for _, e := range entries {
		octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
		err := do(s, octx, e.ID)
		ocancel()
		done := dlq.ActedOn{ID: e.ID, EventID: e.EventID, AccountID: e.AccountID}
		if err != nil {
			done.Error = err.Error()
			rec.Failed = append(rec.Failed, done)
		} else {
			rec.Entries = append(rec.Entries, done)
		}
		if bar != nil {
			_ = bar.Add(1)
		} else if err != nil {
			fmt.Fprintf(out, "%s %d (event %s, account %s): failed: %v\n", verb, e.ID, e.EventID, e.AccountID, err)
		} else {
			fmt.Fprintf(out, "%s %d (event %s, account %s): done\n", pastTense(verb), e.ID, e.EventID, e.AccountID)
		}
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer rcancel()
	recErr := s.Record(rctx, rec)
	fmt.Fprintf(out, "%s %d of %d dead %s of region %s\n", pastTense(verb), len(rec.Entries), len(entries), plural(len(entries), "letter", "letters"), f.region)
	if recErr != nil {
		return fmt.Errorf("the %s was done but not recorded in the region: %v", verb, recErr)
	}
	if len(rec.Failed) > 0 {
		return fmt.Errorf("%d of %d entries could not be %s (see above)", len(rec.Failed), len(entries), pastTense(verb))
	}
	return nil
}

// confirm asks on the terminal; without one it refuses.
func confirm(cmd *cobra.Command, question string) error {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return usagef("%s Not confirmed: stdin is not a terminal; add --yes to confirm", strings.TrimSuffix(question, "?")+".")
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return errors.New("not confirmed; nothing was changed")
	}
	return nil
}

func newDLQHistoryCmd() *cobra.Command {
	var f dlqFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "history",
		Short:   "Show every replay and purge of a region's dead letters",
		Example: "  geomux dlq history --config deploy/local/geomux.yaml --region eu",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withStore(cmd, time.Minute, func(ctx context.Context, s *dlq.Store) error {
				return history(ctx, cmd.OutOrStdout(), s, f.region, asJSON)
			})
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func history(ctx context.Context, out io.Writer, s *dlq.Store, region string, asJSON bool) error {
	actions, err := s.History(ctx)
	if err != nil {
		return err
	}
	if err := printRows(out, asJSON, actions, "WHEN\tWHO\tACTION\tSELECTION\tENTRIES\tFAILED", func(a dlq.Action) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d", a.At.Local().Format(time.DateTime), a.Operator, a.Action, a.Selection, ids(a.Entries), len(a.Failed))
	}); err != nil || asJSON {
		return err
	}
	fmt.Fprintf(out, "%d recorded %s in region %s\n", len(actions), plural(len(actions), "action", "actions"), region)
	return nil
}

func ids(es []dlq.ActedOn) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = strconv.FormatUint(e.ID, 10)
	}
	s := strings.Join(parts, ",")
	return truncate(s, 40)
}

func defaultOperator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

func age(d time.Duration) string {
	switch {
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	case d < 48*time.Hour:
		return d.Truncate(time.Minute).String()
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func pastTense(verb string) string {
	switch verb {
	case "replay":
		return "replayed"
	case "purge":
		return "purged"
	}
	return verb + "ed"
}

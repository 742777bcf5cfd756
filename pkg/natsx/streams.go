package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// setupAttemptTimeout bounds one JetStream API call while setting up. On a
// fresh cluster the API does not answer until a meta leader exists, so a call
// is retried with a short timeout rather than waited on once.
const setupAttemptTimeout = 2 * time.Second

// EnsureStream creates the stream or updates it to cfg.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("set up stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// EnsureKeyValue creates the bucket or updates it to cfg.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := retrySetup(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("set up bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// EnsureConsumer creates the durable consumer of stream or updates it to cfg.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, stream, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("set up consumer %s of %s: %w", cfg.Durable, stream, err)
	}
	return c, nil
}

// BindStream opens a stream that must exist: set up by `geomux setup` with a
// deployer's credentials.
func BindStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	s, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, name) })
	if err != nil {
		return nil, notSetUp("stream", name, err)
	}
	return s, nil
}

// BindKeyValue opens a bucket that must exist (see BindStream).
func BindKeyValue(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := retrySetup(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, bucket) })
	if err != nil {
		return nil, notSetUp("bucket", bucket, err)
	}
	return kv, nil
}

// BindConsumer opens a durable consumer that must exist (see BindStream).
func BindConsumer(ctx context.Context, js jetstream.JetStream, stream, durable string) (jetstream.Consumer, error) {
	c, err := retrySetup(ctx, func(ctx context.Context) (jetstream.Consumer, error) { return js.Consumer(ctx, stream, durable) })
	if err != nil {
		return nil, notSetUp("consumer", stream+"/"+durable, err)
	}
	return c, nil
}

func notSetUp(kind, name string, err error) error {
	return fmt.Errorf("%s %s is not there (nats.manage_streams is false: run geomux setup with a deployer's credentials): %w", kind, name, err)
}

func retrySetup[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	start := time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		v, err := f(actx)
		cancel()
		again := Transient(err) || (noPeersYet(err) && time.Since(start) < peersWait)
		if err == nil || !again || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// peersWait is how long a set-up waits for a fresh cluster's servers to
// count as online: until then JetStream refuses to place a replicated
// stream ("no suitable peers for placement"), as it does for placement
// tags no server has, which waiting does not mend.
const peersWait = 30 * time.Second

// errCodeNoPeers is JetStream's "no suitable peers for placement".
const errCodeNoPeers jetstream.ErrorCode = 10005

func noPeersYet(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoPeers
}

// Transient reports whether a NATS request failed for a reason that passes
// by itself: no answer in time (a server away, the connection
// reconnecting), nobody to answer yet (a stream leader being elected),
// JetStream not enabled yet, the reconnect buffer full.
func Transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrReconnectBufExceeded)
}

// DeleteMsg deletes a stream message, overwriting its bytes on disk when
// secure. It reports whether the message was there: JetStream answers a
// missing message with a generic "delete unsuccessful" error, so that case
// is told apart by looking the message up.
func DeleteMsg(ctx context.Context, s jetstream.Stream, seq uint64, secure bool) (existed bool, err error) {
	if secure {
		err = s.SecureDeleteMsg(ctx, seq)
	} else {
		err = s.DeleteMsg(ctx, seq)
	}
	if err == nil {
		return true, nil
	}
	if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return false, err
}

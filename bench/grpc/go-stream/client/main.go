// Command stream-client-go is the one client of bench/grpc_stream.sh: a
// grpc-go client (Debian golang-google-grpc-dev 1.33) that reads ours and the
// grpc-go peer alike. Messages are raw bytes (a codec under "proto" passes
// []byte through), as both servers take and send them.
//
//	stream-client-go stream   -addr A -n N -size S [-warm W]
//	    one connection; W messages as a warm-up stream (default N/10), then
//	    one /Bench/ServerStream call of N messages of S bytes, read as fast as
//	    they come; every message must be S bytes, the count N, the status OK.
//	    Prints "msgs=N bytes=B secs=T" (request sent -> status received).
//	stream-client-go pingpong -addr A -n N -size S [-warm W]
//	    one /Bench/Bidi call: W round trips (default 1000) unmeasured, then N
//	    round trips of one S-byte message, each send -> echo received timed;
//	    every echo must equal what was sent; half-close, status OK.
//	    Prints "n=N p50_us=.. p99_us=.. mean_us=.. max_us=..".
//	stream-client-go hold     -addr A -streams S -conns C -size Z [-max-hold D]
//	    C connections, S /Bench/ServerStream calls spread over them, each for
//	    "effectively endless" Z-byte messages; each call reads its first
//	    message (so the server surely streams) and then nothing. Windows are
//	    fixed at 64 KiB (stream and connection; no BDP growth), so each stream
//	    has at most 64 KiB on the client side and the rest stays in the server.
//	    Prints "ready S" once every call has its first message, then holds
//	    until stdin reaches EOF (or D passes, default 120 s) and exits without
//	    a graceful close.
//
// Every step has a deadline (-timeout, default 60 s); exit status 1 on any
// failure, with the reason on stderr.
// Build: bench/grpc/go-stream/build.sh (GO111MODULE=off, GOPATH=/usr/share/gocode).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	// A fresh copy, as proto.Marshal allocates one per message: grpc-go
	// queues the slice it gets without copying, so returning the caller's
	// buffer would let every queued message share one buffer (ours copies
	// each message it accepts).
	switch m := v.(type) {
	case []byte:
		return append([]byte(nil), m...), nil
	case *[]byte:
		return append([]byte(nil), *m...), nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

var serverStreamDesc = &grpc.StreamDesc{StreamName: "ServerStream", ServerStreams: true}
var bidiDesc = &grpc.StreamDesc{StreamName: "Bidi", ServerStreams: true, ClientStreams: true}

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "stream-client-go: "+format+"\n", a...)
	os.Exit(1)
}

func dial(ctx context.Context, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	opts = append(opts, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)))
	cc, err := grpc.DialContext(ctx, addr, opts...)
	if err != nil {
		die("dial %s: %v", addr, err)
	}
	return cc
}

// readStream runs one /Bench/ServerStream call of n messages of size bytes.
func readStream(ctx context.Context, cc *grpc.ClientConn, n, size int64) (int64, int64, error) {
	st, err := cc.NewStream(ctx, serverStreamDesc, "/Bench/ServerStream")
	if err != nil {
		return 0, 0, err
	}
	if err := st.SendMsg([]byte(fmt.Sprintf("%d %d", n, size))); err != nil {
		return 0, 0, err
	}
	if err := st.CloseSend(); err != nil {
		return 0, 0, err
	}
	var msgs, total int64
	for {
		var m []byte
		err := st.RecvMsg(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return msgs, total, err
		}
		if int64(len(m)) != size {
			return msgs, total, fmt.Errorf("message %d is %d bytes, not %d", msgs, len(m), size)
		}
		msgs++
		total += int64(len(m))
	}
	if msgs != n {
		return msgs, total, fmt.Errorf("%d messages, not %d", msgs, n)
	}
	return msgs, total, nil
}

func cmdStream(args []string) {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:50051", "server")
	n := fs.Int64("n", 100000, "messages")
	size := fs.Int64("size", 16, "message bytes")
	warm := fs.Int64("warm", -1, "warm-up messages (default n/10)")
	timeout := fs.Duration("timeout", 60*time.Second, "deadline of the whole run")
	fs.Parse(args)
	if *warm < 0 {
		*warm = *n / 10
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cc := dial(ctx, *addr)
	defer cc.Close()
	if *warm > 0 {
		if _, _, err := readStream(ctx, cc, *warm, *size); err != nil {
			die("warm-up stream: %v", err)
		}
	}
	t0 := time.Now()
	msgs, total, err := readStream(ctx, cc, *n, *size)
	secs := time.Since(t0).Seconds()
	if err != nil {
		die("stream: %v (after %d messages)", err, msgs)
	}
	fmt.Printf("msgs=%d bytes=%d secs=%.6f\n", msgs, total, secs)
}

func cmdPingPong(args []string) {
	fs := flag.NewFlagSet("pingpong", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:50051", "server")
	n := fs.Int("n", 10000, "measured round trips")
	size := fs.Int("size", 16, "message bytes")
	warm := fs.Int("warm", 1000, "unmeasured round trips first")
	timeout := fs.Duration("timeout", 60*time.Second, "deadline of the whole run")
	fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cc := dial(ctx, *addr)
	defer cc.Close()
	st, err := cc.NewStream(ctx, bidiDesc, "/Bench/Bidi")
	if err != nil {
		die("bidi: %v", err)
	}
	msg := make([]byte, *size)
	lat := make([]time.Duration, 0, *n)
	for i := 0; i < *warm+*n; i++ {
		for j := range msg {
			msg[j] = byte(i + j)
		}
		t0 := time.Now()
		if err := st.SendMsg(msg); err != nil {
			die("bidi send %d: %v", i, err)
		}
		var r []byte
		if err := st.RecvMsg(&r); err != nil {
			die("bidi recv %d: %v", i, err)
		}
		d := time.Since(t0)
		if !bytes.Equal(r, msg) {
			die("bidi: echo %d differs (%d bytes)", i, len(r))
		}
		if i >= *warm {
			lat = append(lat, d)
		}
	}
	if err := st.CloseSend(); err != nil {
		die("bidi close-send: %v", err)
	}
	var r []byte
	if err := st.RecvMsg(&r); err != io.EOF {
		die("bidi end: %v, not OK", err)
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	q := func(p float64) float64 { // nearest rank
		k := int(p*float64(len(lat))+0.999999) - 1
		if k < 0 {
			k = 0
		}
		return float64(lat[k].Nanoseconds()) / 1e3
	}
	fmt.Printf("n=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f\n", len(lat), q(0.50), q(0.99),
		float64(sum.Nanoseconds())/1e3/float64(len(lat)), float64(lat[len(lat)-1].Nanoseconds())/1e3)
}

func cmdHold(args []string) {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:50051", "server")
	streams := fs.Int("streams", 1000, "server streams")
	conns := fs.Int("conns", 20, "connections")
	size := fs.Int64("size", 1024, "message bytes")
	maxHold := fs.Duration("max-hold", 120*time.Second, "hold at most this long")
	timeout := fs.Duration("timeout", 60*time.Second, "deadline to open every stream")
	fs.Parse(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, *timeout)
	defer dcancel()
	ccs := make([]*grpc.ClientConn, *conns)
	for i := range ccs {
		// Fixed 64 KiB windows: no BDP growth, so what the client buffers
		// per stream is bounded and the server holds the rest.
		ccs[i] = dial(dctx, *addr, grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))
	}
	errc := make(chan error, *streams)
	var wg sync.WaitGroup
	holds := make([]grpc.ClientStream, *streams)
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st, err := ccs[i%*conns].NewStream(ctx, serverStreamDesc, "/Bench/ServerStream")
			if err == nil {
				err = st.SendMsg([]byte(fmt.Sprintf("%d %d", int64(1)<<50, *size)))
			}
			if err == nil {
				err = st.CloseSend()
			}
			var m []byte
			if err == nil {
				err = st.RecvMsg(&m)
			}
			if err == nil && int64(len(m)) != *size {
				err = fmt.Errorf("first message %d bytes", len(m))
			}
			if err != nil {
				errc <- fmt.Errorf("stream %d: %v", i, err)
				return
			}
			holds[i] = st
		}(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-dctx.Done():
		die("not every stream had its first message within %v", *timeout)
	}
	select {
	case err := <-errc:
		die("%v", err)
	default:
	}
	fmt.Printf("ready %d\n", *streams)
	os.Stdout.Sync()
	eof := make(chan struct{})
	go func() { io.Copy(ioutil.Discard, os.Stdin); close(eof) }()
	select {
	case <-eof:
	case <-time.After(*maxHold):
		fmt.Fprintf(os.Stderr, "stream-client-go: hold: %v passed without EOF on stdin\n", *maxHold)
	}
	os.Exit(0)
}

func main() {
	encoding.RegisterCodec(rawCodec{})
	if len(os.Args) < 2 {
		die("usage: stream-client-go stream|pingpong|hold [flags]")
	}
	switch os.Args[1] {
	case "stream":
		cmdStream(os.Args[2:])
	case "pingpong":
		cmdPingPong(os.Args[2:])
	case "hold":
		cmdHold(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}

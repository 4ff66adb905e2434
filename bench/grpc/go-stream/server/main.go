// Command stream-server-go is the grpc-go peer of ours in
// bench/grpc_stream.sh (bench/grpc/grace-stream/stream_server.c): the same
// two raw-byte methods on grpc-go (Debian golang-google-grpc-dev 1.33),
// default server options.
//
//	/Bench/ServerStream  request "N SIZE": N messages of SIZE bytes, then OK;
//	                     SendMsg blocks while the stream's write quota
//	                     (64 KiB) is used up: grpc-go's backpressure
//	/Bench/Bidi          echoes each message; OK when the client half-closes
//
// Messages are raw bytes: the codec registered under "proto" passes []byte
// through, as ours takes and sends grace_grpc_bytes, so neither side spends
// time on protobuf. SIGTERM/SIGINT: GracefulStop, Stop() after 5 s (exit 1).
//
// Flags: -port N (default 50051), -host H (default 127.0.0.1).
// Build: bench/grpc/go-stream/build.sh (GO111MODULE=off, GOPATH=/usr/share/gocode).
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// rawCodec replaces the proto codec: messages are *[]byte / []byte.
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

func serverStream(_ interface{}, st grpc.ServerStream) error {
	var req []byte
	if err := st.RecvMsg(&req); err != nil {
		return err
	}
	var n, size int64
	if _, err := fmt.Sscanf(string(req), "%d %d", &n, &size); err != nil || n < 0 || size < 0 ||
		size > 4*1024*1024-16 {
		return status.Error(codes.InvalidArgument, `want "N SIZE"`)
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	for i := int64(0); i < n; i++ {
		if err := st.SendMsg(buf); err != nil {
			return err
		}
	}
	return nil
}

func bidi(_ interface{}, st grpc.ServerStream) error {
	for {
		var m []byte
		err := st.RecvMsg(&m)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.SendMsg(m); err != nil {
			return err
		}
	}
}

var benchDesc = grpc.ServiceDesc{
	ServiceName: "Bench",
	HandlerType: (*interface{})(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", Handler: serverStream, ServerStreams: true},
		{StreamName: "Bidi", Handler: bidi, ServerStreams: true, ClientStreams: true},
	},
}

func main() {
	port := flag.Int("port", 50051, "The server port")
	host := flag.String("host", "127.0.0.1", "listen host")
	flag.Parse()
	encoding.RegisterCodec(rawCodec{})

	lis, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		log.Fatalf("failed to listen: %v", err)
	}
	s := grpc.NewServer()
	s.RegisterService(&benchDesc, nil)
	go func() {
		if err := s.Serve(lis); err != nil {
			log.Fatalf("failed to serve: %v", err)
		}
	}()
	log.Printf("listening on %d", *port)
	c := make(chan os.Signal, 2)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	<-c
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
		log.Print("gRPC server graceful shutdown completed")
	case <-time.After(5 * time.Second):
		s.Stop()
		log.Print("gRPC server graceful shutdown: deadline exceeded")
		os.Exit(1)
	}
}

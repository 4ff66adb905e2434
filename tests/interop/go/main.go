// Command interop-client-go runs one gRPC interop test case, as the client
// side of doc/interop-test-descriptions.md (grpc/grpc) specifies it, on
// grpc-go (Debian's golang-google-grpc-dev), against a grpc.testing
// TestService server on 127.0.0.1 (tests/programs/grpc-interop-server).
//
//	interop-client-go -port N -case NAME [-timeout-ms T]
//
// Cases: empty_unary, large_unary, client_streaming, server_streaming,
// ping_pong, empty_stream, cancel_after_begin, cancel_after_first_response,
// timeout_on_sleeping_server, status_code_and_message,
// special_status_message, unimplemented_method, unimplemented_service,
// custom_metadata; and beyond the descriptions server_stream_100000 and
// client_stream_100000 (100,000 messages, each in order, then OK).
//
// Prints "PASS <case>" and exits 0, or "FAIL <case>: <why>" and exits 1.
// Every case is bounded by -timeout-ms (default 10 s; 120 s for the long
// ones), the dial included.
//
// Built by tests/integration/test_grpc_interop_go.py: protoc with Debian's
// protoc-gen-go and protoc-gen-go-grpc generates package graceinterop/pb
// from proto/grpc/testing/ into a GOPATH in the build directory, and go
// builds offline with GO111MODULE=off, GOPATH=<that>:/usr/share/gocode.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"graceinterop/pb"
)

var (
	reqSizes  = []int{27182, 8, 1828, 45904}
	respSizes = []int{31415, 9, 2653, 58979}
)

const (
	largeReq  = 271828
	largeResp = 314159
	longN     = 100000

	initialKey   = "x-grpc-test-echo-initial"
	initialValue = "test_initial_metadata_value"
	trailingKey  = "x-grpc-test-echo-trailing-bin"
	trailingVal  = "\xab\xab\xab"

	specialMessage = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
)

type client struct {
	conn *grpc.ClientConn
	tc   pb.TestServiceClient
}

func payload(n int) *pb.Payload {
	return &pb.Payload{Type: pb.PayloadType_COMPRESSABLE, Body: make([]byte, n)}
}

// checkBody: the payload body has n bytes, all zero.
func checkBody(p *pb.Payload, n int) error {
	b := p.GetBody()
	if len(b) != n {
		return fmt.Errorf("payload body of %d bytes, want %d", len(b), n)
	}
	if !bytes.Equal(b, make([]byte, n)) {
		return fmt.Errorf("payload body of %d bytes is not all zeros", n)
	}
	return nil
}

// wantCode: err is a status with the code (and, when msg is not nil, the
// message) wanted.
func wantCode(err error, code codes.Code, msg *string) error {
	if err == nil {
		return fmt.Errorf("call succeeded, want status %v", code)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("error %v is not a gRPC status, want %v", err, code)
	}
	if st.Code() != code {
		return fmt.Errorf("status %v (%q), want %v", st.Code(), st.Message(), code)
	}
	if msg != nil && st.Message() != *msg {
		return fmt.Errorf("status message %q, want %q", st.Message(), *msg)
	}
	return nil
}

// recvEOF: the stream ends with OK and no further message.
func recvEOF(recv func() (*pb.StreamingOutputCallResponse, error)) error {
	m, err := recv()
	if err == nil {
		return fmt.Errorf("unexpected response with a %d-byte body", len(m.GetPayload().GetBody()))
	}
	if err != io.EOF {
		return fmt.Errorf("stream ended with %v, want OK", err)
	}
	return nil
}

func (c *client) emptyUnary(ctx context.Context) error {
	r, err := c.tc.EmptyCall(ctx, &pb.Empty{})
	if err != nil {
		return err
	}
	if r == nil {
		return errors.New("nil response")
	}
	return nil
}

func (c *client) largeUnary(ctx context.Context) error {
	r, err := c.tc.UnaryCall(ctx, &pb.SimpleRequest{
		ResponseType: pb.PayloadType_COMPRESSABLE,
		ResponseSize: largeResp,
		Payload:      payload(largeReq),
	})
	if err != nil {
		return err
	}
	return checkBody(r.GetPayload(), largeResp)
}

func (c *client) clientStreaming(ctx context.Context) error {
	s, err := c.tc.StreamingInputCall(ctx)
	if err != nil {
		return err
	}
	sum := 0
	for _, n := range reqSizes {
		if err := s.Send(&pb.StreamingInputCallRequest{Payload: payload(n)}); err != nil {
			return fmt.Errorf("send: %v", err)
		}
		sum += n
	}
	r, err := s.CloseAndRecv()
	if err != nil {
		return err
	}
	if int(r.GetAggregatedPayloadSize()) != sum || sum != 74922 {
		return fmt.Errorf("aggregated_payload_size %d, want %d", r.GetAggregatedPayloadSize(), sum)
	}
	return nil
}

func outputRequest(sizes []int, reqSize int) *pb.StreamingOutputCallRequest {
	req := &pb.StreamingOutputCallRequest{ResponseType: pb.PayloadType_COMPRESSABLE}
	for _, n := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &pb.ResponseParameters{Size: int32(n)})
	}
	if reqSize > 0 {
		req.Payload = payload(reqSize)
	}
	return req
}

func (c *client) serverStreaming(ctx context.Context) error {
	s, err := c.tc.StreamingOutputCall(ctx, outputRequest(respSizes, 0))
	if err != nil {
		return err
	}
	i := 0
	for ; ; i++ {
		r, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d responses: %v", i, err)
		}
		if i >= len(respSizes) {
			return fmt.Errorf("more than %d responses", len(respSizes))
		}
		if err := checkBody(r.GetPayload(), respSizes[i]); err != nil {
			return fmt.Errorf("response %d: %v", i, err)
		}
	}
	if i != len(respSizes) {
		return fmt.Errorf("%d responses, want %d", i, len(respSizes))
	}
	return nil
}

func (c *client) pingPong(ctx context.Context) error {
	s, err := c.tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	for i := range reqSizes {
		if err := s.Send(outputRequest(respSizes[i:i+1], reqSizes[i])); err != nil {
			return fmt.Errorf("send %d: %v", i, err)
		}
		r, err := s.Recv()
		if err != nil {
			return fmt.Errorf("response %d: %v", i, err)
		}
		if err := checkBody(r.GetPayload(), respSizes[i]); err != nil {
			return fmt.Errorf("response %d: %v", i, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return recvEOF(s.Recv)
}

func (c *client) emptyStream(ctx context.Context) error {
	s, err := c.tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return recvEOF(s.Recv)
}

func (c *client) cancelAfterBegin(ctx context.Context) error {
	cctx, cancel := context.WithCancel(ctx)
	s, err := c.tc.StreamingInputCall(cctx)
	if err != nil {
		cancel()
		return err
	}
	cancel()
	_, err = s.CloseAndRecv()
	return wantCode(err, codes.Canceled, nil)
}

func (c *client) cancelAfterFirstResponse(ctx context.Context) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.tc.FullDuplexCall(cctx)
	if err != nil {
		return err
	}
	if err := s.Send(outputRequest([]int{31415}, 27182)); err != nil {
		return fmt.Errorf("send: %v", err)
	}
	r, err := s.Recv()
	if err != nil {
		return fmt.Errorf("first response: %v", err)
	}
	if err := checkBody(r.GetPayload(), 31415); err != nil {
		return err
	}
	cancel()
	_, err = s.Recv()
	return wantCode(err, codes.Canceled, nil)
}

func (c *client) timeoutOnSleepingServer(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	s, err := c.tc.FullDuplexCall(tctx)
	if err != nil {
		// The deadline may pass before the stream starts.
		return wantCode(err, codes.DeadlineExceeded, nil)
	}
	if err := s.Send(outputRequest(nil, 27182)); err != nil && err != io.EOF {
		return wantCode(err, codes.DeadlineExceeded, nil)
	}
	_, err = s.Recv()
	return wantCode(err, codes.DeadlineExceeded, nil)
}

func (c *client) statusCodeAndMessage(ctx context.Context, msg string) error {
	st := &pb.EchoStatus{Code: 2, Message: msg}
	_, err := c.tc.UnaryCall(ctx, &pb.SimpleRequest{ResponseStatus: st})
	if err := wantCode(err, codes.Unknown, &msg); err != nil {
		return fmt.Errorf("UnaryCall: %v", err)
	}
	s, err := c.tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&pb.StreamingOutputCallRequest{ResponseStatus: st}); err != nil {
		return fmt.Errorf("send: %v", err)
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	_, err = s.Recv()
	if err := wantCode(err, codes.Unknown, &msg); err != nil {
		return fmt.Errorf("FullDuplexCall: %v", err)
	}
	return nil
}

func (c *client) specialStatusMessage(ctx context.Context) error {
	msg := specialMessage
	_, err := c.tc.UnaryCall(ctx, &pb.SimpleRequest{
		ResponseStatus: &pb.EchoStatus{Code: 2, Message: msg},
	})
	return wantCode(err, codes.Unknown, &msg)
}

func (c *client) unimplementedMethod(ctx context.Context) error {
	_, err := c.tc.UnimplementedCall(ctx, &pb.Empty{})
	return wantCode(err, codes.Unimplemented, nil)
}

func (c *client) unimplementedService(ctx context.Context) error {
	_, err := pb.NewUnimplementedServiceClient(c.conn).UnimplementedCall(ctx, &pb.Empty{})
	return wantCode(err, codes.Unimplemented, nil)
}

func checkEchoed(header, trailer metadata.MD) error {
	if v := header.Get(initialKey); len(v) != 1 || v[0] != initialValue {
		return fmt.Errorf("initial metadata %s = %q, want [%q]", initialKey, v, initialValue)
	}
	if v := trailer.Get(trailingKey); len(v) != 1 || v[0] != trailingVal {
		return fmt.Errorf("trailing metadata %s = %q, want [%q]", trailingKey, v, trailingVal)
	}
	return nil
}

func (c *client) customMetadata(ctx context.Context) error {
	mctx := metadata.AppendToOutgoingContext(ctx, initialKey, initialValue, trailingKey, trailingVal)
	var header, trailer metadata.MD
	r, err := c.tc.UnaryCall(mctx, &pb.SimpleRequest{
		ResponseType: pb.PayloadType_COMPRESSABLE,
		ResponseSize: largeResp,
		Payload:      payload(largeReq),
	}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		return fmt.Errorf("UnaryCall: %v", err)
	}
	if err := checkBody(r.GetPayload(), largeResp); err != nil {
		return fmt.Errorf("UnaryCall: %v", err)
	}
	if err := checkEchoed(header, trailer); err != nil {
		return fmt.Errorf("UnaryCall: %v", err)
	}

	s, err := c.tc.FullDuplexCall(mctx)
	if err != nil {
		return err
	}
	if err := s.Send(outputRequest([]int{largeResp}, largeReq)); err != nil {
		return fmt.Errorf("FullDuplexCall send: %v", err)
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	header, err = s.Header()
	if err != nil {
		return fmt.Errorf("FullDuplexCall header: %v", err)
	}
	m, err := s.Recv()
	if err != nil {
		return fmt.Errorf("FullDuplexCall: %v", err)
	}
	if err := checkBody(m.GetPayload(), largeResp); err != nil {
		return fmt.Errorf("FullDuplexCall: %v", err)
	}
	if err := recvEOF(s.Recv); err != nil {
		return fmt.Errorf("FullDuplexCall: %v", err)
	}
	if err := checkEchoed(header, s.Trailer()); err != nil {
		return fmt.Errorf("FullDuplexCall: %v", err)
	}
	return nil
}

func longSizes() []int {
	sizes := make([]int, longN)
	for i := range sizes {
		sizes[i] = i % 251
	}
	return sizes
}

// recvSizes reads a stream to its end, checking every response's size in
// order.
func recvSizes(recv func() (*pb.StreamingOutputCallResponse, error), sizes []int) error {
	i := 0
	for ; ; i++ {
		r, err := recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d of %d responses: %v", i, len(sizes), err)
		}
		if i >= len(sizes) {
			return fmt.Errorf("more than %d responses", len(sizes))
		}
		if err := checkBody(r.GetPayload(), sizes[i]); err != nil {
			return fmt.Errorf("response %d: %v", i, err)
		}
	}
	if i != len(sizes) {
		return fmt.Errorf("%d responses, want %d", i, len(sizes))
	}
	return nil
}

func (c *client) serverStream100000(ctx context.Context) error {
	sizes := longSizes()
	s, err := c.tc.StreamingOutputCall(ctx, outputRequest(sizes, 0))
	if err != nil {
		return err
	}
	return recvSizes(s.Recv, sizes)
}

func (c *client) clientStream100000(ctx context.Context) error {
	sizes := longSizes()
	in, err := c.tc.StreamingInputCall(ctx)
	if err != nil {
		return err
	}
	sum := 0
	for i, n := range sizes {
		if err := in.Send(&pb.StreamingInputCallRequest{Payload: payload(n)}); err != nil {
			return fmt.Errorf("StreamingInputCall send %d: %v", i, err)
		}
		sum += n
	}
	r, err := in.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("StreamingInputCall: %v", err)
	}
	if int(r.GetAggregatedPayloadSize()) != sum {
		return fmt.Errorf("aggregated_payload_size %d, want %d", r.GetAggregatedPayloadSize(), sum)
	}
	// In order: each request asks for a reply of its own size, so the
	// replies show the order the server read the requests in.
	s, err := c.tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		for i, n := range sizes {
			if err := s.Send(outputRequest([]int{n}, 0)); err != nil {
				sent <- fmt.Errorf("FullDuplexCall send %d: %v", i, err)
				return
			}
		}
		sent <- s.CloseSend()
	}()
	if err := recvSizes(s.Recv, sizes); err != nil {
		return fmt.Errorf("FullDuplexCall: %v", err)
	}
	return <-sent
}

func main() {
	port := flag.Int("port", 0, "server port on 127.0.0.1")
	name := flag.String("case", "", "test case")
	timeoutMs := flag.Int("timeout-ms", 0, "bound on the case in ms (default 10 s, 120 s for the long streams)")
	flag.Parse()

	c := &client{}
	cases := map[string]func(context.Context) error{
		"empty_unary":                 c.emptyUnary,
		"large_unary":                 c.largeUnary,
		"client_streaming":            c.clientStreaming,
		"server_streaming":            c.serverStreaming,
		"ping_pong":                   c.pingPong,
		"empty_stream":                c.emptyStream,
		"cancel_after_begin":          c.cancelAfterBegin,
		"cancel_after_first_response": c.cancelAfterFirstResponse,
		"timeout_on_sleeping_server":  c.timeoutOnSleepingServer,
		"status_code_and_message": func(ctx context.Context) error {
			return c.statusCodeAndMessage(ctx, "test status message")
		},
		"special_status_message": c.specialStatusMessage,
		"unimplemented_method":   c.unimplementedMethod,
		"unimplemented_service":  c.unimplementedService,
		"custom_metadata":        c.customMetadata,
		"server_stream_100000":   c.serverStream100000,
		"client_stream_100000":   c.clientStream100000,
	}
	run, ok := cases[*name]
	if *port <= 0 || !ok {
		fmt.Fprintf(os.Stderr, "usage: interop-client-go -port N -case NAME (unknown case %q)\n", *name)
		os.Exit(2)
	}
	timeout := time.Duration(*timeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = 10 * time.Second
		if *name == "server_stream_100000" || *name == "client_stream_100000" {
			timeout = 120 * time.Second
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	fail := func(err error) {
		fmt.Printf("FAIL %s: %v\n", *name, err)
		os.Exit(1)
	}
	conn, err := grpc.DialContext(ctx, fmt.Sprintf("127.0.0.1:%d", *port),
		grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail(fmt.Errorf("dial: %v", err))
	}
	defer conn.Close()
	c.conn, c.tc = conn, pb.NewTestServiceClient(conn)
	if err := run(ctx); err != nil {
		fail(err)
	}
	// The connection outlives the case: a plain call on it still works
	// (after a cancel, the server reset that stream only).
	if err := c.emptyUnary(ctx); err != nil {
		fail(fmt.Errorf("EmptyCall after the case: %v", err))
	}
	fmt.Printf("PASS %s\n", *name)
}

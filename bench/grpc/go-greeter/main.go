// Command greeter-server-go is the grpc-go peer of examples/greeter-server:
// the seed's Greeter server on grpc-go (Debian's golang-google-grpc-dev, built
// offline in GOPATH mode), so that the benchmarks in bench/ can run the
// program a user would otherwise pick in the same run as ours.
//
// SayHello logs "Received: <name>", sleeps the request's duration (Go
// duration text; empty or invalid means no sleep, as the seed ignores the
// parse error) and replies "Hello <name>".
//
// The signal handling is Kubernetes' SetupSignalContext written inline: the
// first SIGINT/SIGTERM starts GracefulStop, the second one ends the process
// at once with exit status 1. Beyond the seed, -shutdown-timeout D (default
// 0: none, grpc-go's own behaviour, wait forever) calls Stop() when the
// graceful stop has not finished after D, logs
// "gRPC server graceful shutdown: deadline exceeded" and exits 1, so the
// escalation scenario of bench/grpc_shutdown.py can be compared with ours.
//
// Flags: -port N (default 50051), -host H (default "": all addresses),
// -shutdown-timeout D.
//
// Build: bench/grpc/go-greeter/build.sh (protoc + Debian's protoc-gen-go and
// protoc-gen-go-grpc generate package pb from examples/proto/helloworld.proto into a
// scratch GOPATH; GO111MODULE=off, GOPATH=scratch:/usr/share/gocode).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"gracebench/pb"
)

type server struct {
	pb.UnimplementedGreeterServer
}

// SayHello implements pb.GreeterServer, exactly as the seed's.
func (s *server) SayHello(ctx context.Context, in *pb.HelloRequest) (*pb.HelloReply, error) {
	log.Printf("Received: %v", in.GetName())
	duration, _ := time.ParseDuration(in.GetDuration())
	time.Sleep(duration)
	return &pb.HelloReply{Message: "Hello " + in.GetName()}, nil
}

// setupSignalContext mirrors k8s.io/apiserver/pkg/server.SetupSignalContext:
// the context is cancelled at the first signal, the second exits with 1.
func setupSignalContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	c := make(chan os.Signal, 2)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-c
		cancel()
		<-c
		os.Exit(1)
	}()
	return ctx
}

func main() {
	port := flag.Int("port", 50051, "The server port")
	host := flag.String("host", "", "listen host (default: all addresses)")
	shutdownTimeout := flag.Duration("shutdown-timeout", 0,
		"deadline of the graceful stop, then Stop() and exit 1 (0: wait forever, as grpc-go)")
	flag.Parse()

	ctx := setupSignalContext()
	lis, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		log.Fatalf("failed to listen: %v", err)
	}
	s := grpc.NewServer()
	pb.RegisterGreeterServer(s, &server{})
	log.Printf("server listening at %v", lis.Addr())
	go func() {
		if err := s.Serve(lis); err != nil {
			log.Fatalf("failed to serve: %v", err)
		}
	}()

	<-ctx.Done()
	log.Printf("Shutdown Server...")
	if *shutdownTimeout <= 0 {
		s.GracefulStop()
		log.Println("gRPC server graceful shutdown completed")
		return
	}
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		log.Println("gRPC server graceful shutdown completed")
	case <-time.After(*shutdownTimeout):
		// Stop closes every connection and makes GracefulStop return; a
		// handler that never ends keeps running in its goroutine, which does
		// not hold up the process exit.
		s.Stop()
		log.Println("gRPC server graceful shutdown: deadline exceeded")
		os.Exit(1)
	}
}

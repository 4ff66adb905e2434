// Command http-sleep-server is the Go peer of examples/http-sleep-server: the
// seed's /sleep server, written with Go's standard library only, so that the
// benchmarks in bench/ can run the program a user would otherwise pick in the
// same run as ours.
//
// The signal handling is Kubernetes' SetupSignalContext written inline: the
// first SIGINT/SIGTERM starts srv.Shutdown with a deadline, the second one
// ends the process at once with exit status 1.
//
// Routes (same contract as ours):
//
//	GET /sleep?duration=D  sleeps D, then 200 "Welcome HTTP Server"
//	GET /                  200 "Hello, World!\n"
//	anything else          404 "404 page not found\n"
//
// Build (no network, no modules needed):
//
//	GO111MODULE=off go build -o http-sleep-server-go .
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func sleepHandler(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.URL.Query().Get("duration"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	time.Sleep(d)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("Welcome HTTP Server"))
}

func rootHandler(w http.ResponseWriter, r *http.Request) {
	// "/" is also net/http's catch-all pattern: keep it to the exact path.
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("Hello, World!\n"))
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
	addr := flag.String("addr", ":8000", "listen address")
	shutdownTimeout := flag.Duration("shutdown-timeout", 10*time.Second, "graceful shutdown deadline")
	idleTimeout := flag.Duration("idle-timeout", 120*time.Second, "keep-alive idle timeout")
	readHeaderTimeout := flag.Duration("read-header-timeout", 10*time.Second, "read header timeout")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/sleep", sleepHandler)
	mux.HandleFunc("/", rootHandler)
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		IdleTimeout:       *idleTimeout,
		ReadHeaderTimeout: *readHeaderTimeout,
	}

	ctx := setupSignalContext()
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("listen: %s\n", err)
		}
		log.Println("Stopped serving new connections")
	}()

	<-ctx.Done()
	log.Println("Shutdown Server...")
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Println("HTTP server Shutdown:", err)
		os.Exit(1)
	}
	log.Println("HTTP server graceful shutdown completed")
}

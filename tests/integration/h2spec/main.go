// A minimal command for the h2spec conformance suite (its library,
// github.com/summerwind/h2spec, MIT licence, is in ../shared/tools/h2spec;
// the shared copy has no command package).  test_h2spec.py builds it with
// Debian's Go packages, offline, and runs it against our servers.
//
// Usage: h2spec -h HOST -p PORT [-o SECONDS] [-j REPORT.xml] [-S] [-v]
// Exit status 0 when every case passed, 1 when one failed, 2 on bad flags.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/summerwind/h2spec"
	"github.com/summerwind/h2spec/config"
)

func main() {
	host := flag.String("h", "127.0.0.1", "target host")
	port := flag.Int("p", 0, "target port")
	path := flag.String("P", "/", "target path")
	timeout := flag.Int("o", 2, "seconds a case waits for an answer")
	junit := flag.String("j", "", "write a JUnit report to this file")
	strict := flag.Bool("S", false, "run the strict cases too")
	verbose := flag.Bool("v", false, "log every frame")
	flag.Parse()
	if *port <= 0 || *port > 65535 {
		fmt.Fprintln(os.Stderr, "h2spec: -p PORT is required")
		os.Exit(2)
	}
	c := &config.Config{
		Host:         *host,
		Port:         *port,
		Path:         *path,
		Timeout:      time.Duration(*timeout) * time.Second,
		MaxHeaderLen: 4000,
		JUnitReport:  *junit,
		Strict:       *strict,
		Verbose:      *verbose,
		Sections:     flag.Args(),
	}
	ok, err := h2spec.Run(c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "h2spec: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

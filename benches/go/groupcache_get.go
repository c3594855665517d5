// golang/groupcache's Group.Get on a hit, for svckit's cache benchmark (benches/cache.rs,
// `cargo bench --bench cache -- vs_go`, which builds this file and runs it between its own
// rounds so that Go and Rust are measured in the same minutes).
//
// One group of 64 MiB holding 1,000 keys ("/v1/item/%08d", 100-byte values), visited in the
// same stride order as the Rust bench; every get copies the value out through
// AllocatingByteSliceSink. Prints the nanoseconds per hit of one timed loop of -iters gets.
//
// Build (GOPATH mode, no network; Debian packages golang-go and
// golang-github-golang-groupcache-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/gocache GOPROXY=off \
//	    go build -o /tmp/groupcache_get benches/go/groupcache_get.go
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/golang/groupcache"
)

func main() {
	n := flag.Int("keys", 1000, "cached keys")
	iters := flag.Int("iters", 1000000, "timed gets")
	flag.Parse()

	value := make([]byte, 100)
	for i := range value {
		value[i] = 7
	}
	group := groupcache.NewGroup("bench", 64<<20, groupcache.GetterFunc(
		func(_ context.Context, _ string, dest groupcache.Sink) error {
			return dest.SetBytes(value)
		}))
	keys := make([]string, *n)
	for i := range keys {
		// The stride order of benches/cache.rs's `scrambled`.
		keys[i] = fmt.Sprintf("/v1/item/%08d", (i*7919)%*n)
	}
	ctx := context.Background()
	var dst []byte
	for _, k := range keys {
		if err := group.Get(ctx, k, groupcache.AllocatingByteSliceSink(&dst)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	// Warm up, then time.
	get := func(count int) {
		i := 0
		for c := 0; c < count; c++ {
			if err := group.Get(ctx, keys[i], groupcache.AllocatingByteSliceSink(&dst)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			i++
			if i == len(keys) {
				i = 0
			}
		}
	}
	get(*iters / 4)
	start := time.Now()
	get(*iters)
	elapsed := time.Since(start)
	if st := group.CacheStats(groupcache.MainCache); st.Items != int64(*n) {
		fmt.Fprintf(os.Stderr, "expected %d cached keys, have %d\n", *n, st.Items)
		os.Exit(1)
	}
	fmt.Printf("%.2f\n", float64(elapsed.Nanoseconds())/float64(*iters))
}

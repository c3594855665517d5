// A golang/groupcache node for svckit's interoperability test (tests/go_interop.rs).
//
// It runs golang/groupcache's own HTTPPool and Group, unchanged, next to a few test
// endpoints on the same listener:
//
//	/_groupcache/...  the peer protocol (HTTPPool.ServeHTTP)
//	/get?key=K        the raw value of K through group.Get (502 + reason on error)
//	/loads            JSON list of the keys this node's getter loaded, in order
//	/stats            JSON of the group's counters
//	/owner?key=K      the peer URL that golang/groupcache's ring (consistenthash, 50
//	                  replicas, crc32) names for K
//	/owners           POST a JSON list of keys, get the JSON list of their owners
//
// Build (GOPATH mode, no network; Debian packages golang-go and
// golang-github-golang-groupcache-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/gocache GOPROXY=off \
//	    go build -o /tmp/gonode tests/go/groupcache_node.go
//
// Prints "ready" once listening; exits on SIGTERM/SIGINT or when stdin is closed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/golang/groupcache"
	"github.com/golang/groupcache/consistenthash"
)

// The value every node (Go or Rust) of the test computes for a key.
func valueOf(key string) []byte {
	return []byte("value-of:" + key)
}

type loads struct {
	mu   sync.Mutex
	keys []string
}

func (l *loads) add(key string) {
	l.mu.Lock()
	l.keys = append(l.keys, key)
	l.mu.Unlock()
}

func (l *loads) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string{}, l.keys...)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	self := flag.String("self", "", "this node's base URL as the peers list it")
	peers := flag.String("peers", "", "comma-separated base URLs of all nodes")
	groupName := flag.String("group", "interop", "group name")
	basePath := flag.String("base-path", "/_groupcache/", "base path of the peer protocol")
	budget := flag.Int64("budget", 64<<20, "group cache budget in bytes")
	replicas := flag.Int("replicas", 50, "ring points per peer")
	flag.Parse()
	if *self == "" {
		log.Fatal("-self is required")
	}

	pool := groupcache.NewHTTPPoolOpts(*self, &groupcache.HTTPPoolOptions{
		BasePath: *basePath,
		Replicas: *replicas,
	})
	var peerList []string
	for _, p := range strings.Split(*peers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			peerList = append(peerList, p)
		}
	}
	pool.Set(peerList...)

	recorded := &loads{}
	group := groupcache.NewGroup(*groupName, *budget, groupcache.GetterFunc(
		func(_ context.Context, key string, dest groupcache.Sink) error {
			recorded.add(key)
			return dest.SetBytes(valueOf(key))
		}))

	mux := http.NewServeMux()
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if _, ok := q["key"]; !ok {
			http.Error(w, "missing key", http.StatusBadRequest)
			return
		}
		var value []byte
		if err := group.Get(r.Context(), q.Get("key"), groupcache.AllocatingByteSliceSink(&value)); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(value)
	})
	mux.HandleFunc("/loads", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(recorded.snapshot())
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		s := &group.Stats
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int64{
			"gets":              s.Gets.Get(),
			"cache_hits":        s.CacheHits.Get(),
			"peer_loads":        s.PeerLoads.Get(),
			"peer_errors":       s.PeerErrors.Get(),
			"loads":             s.Loads.Get(),
			"loads_deduped":     s.LoadsDeduped.Get(),
			"local_loads":       s.LocalLoads.Get(),
			"local_load_errors": s.LocalLoadErrs.Get(),
			"server_requests":   s.ServerRequests.Get(),
		})
	})
	// golang/groupcache's own ring (the one HTTPPool.Set builds), to compare owners with.
	ring := consistenthash.New(*replicas, nil)
	ring.Add(peerList...)
	mux.HandleFunc("/owner", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, ring.Get(r.URL.Query().Get("key")))
	})
	// POST a JSON list of keys, get the JSON list of their owners.
	mux.HandleFunc("/owners", func(w http.ResponseWriter, r *http.Request) {
		var keys []string
		if err := json.NewDecoder(r.Body).Decode(&keys); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		owners := make([]string, len(keys))
		for i, k := range keys {
			owners[i] = ring.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(owners)
	})

	// The peer protocol is handed to the pool directly rather than through a ServeMux:
	// http.ServeMux redirects (301) any path that is not clean after decoding, e.g. the
	// key "//" or ".." or one starting with "/", which golang/groupcache's client does not
	// follow. That is a limitation of NewHTTPPool's DefaultServeMux registration, not of
	// the protocol, and this node should carry every key svckit can.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, *basePath) {
			pool.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}
	srv := &http.Server{Handler: handler}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Fatalf("serve: %v", err)
		}
	}()
	fmt.Printf("ready %s\n", ln.Addr())
	os.Stdout.Sync()

	done := make(chan struct{})
	go func() {
		// Stdin closed (the parent went away or is done with us): stop.
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(done)
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigs:
	case <-done:
	}
	srv.Close()
}

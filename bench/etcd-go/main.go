// etcd-go-bench is the yardstick of coord's benchmarks: the same workloads as
// `coord bench`, written on etcd's own Go coordination recipes (clientv3/concurrency
// and contrib/recipes of etcd v3.4, as Debian packages them), so that a line printed
// by either side compares field for field with the other's on the same etcd server.
//
// It doubles as an interoperability partner: `hold`, `elect`, `observe`, `leader` and
// `rw` take or watch the same keys as coord's lock, election and read/write lock.
//
// Every command prints its results as one line of key=value fields on stdout; long
// runs print progress on stderr. Any failure exits 1 (contend: also a wrong counter).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

const usageText = `usage: etcd-go-bench COMMAND [flags]

benchmarks (the workloads and output fields of coord bench):
  lock-loop  -name N [-n COUNT | -duration D]
             one session; COUNT times (or until D has passed): Lock, Unlock
             fields: ops elapsed_ns per_op_ns p50_ns p99_ns
  contend    -name N -key K -workers W [-clients C] [-n COUNT | -duration D]
             writes K=0; W workers, each with its own session (and client, unless
             -clients: worker i then uses client i mod C), each COUNT
             times (or until D has passed): Lock, read K, write K+1, Unlock. The clock
             starts once every worker is connected. A handoff is the time from a
             holder's Unlock call to the Lock return of a worker that was already
             waiting then. Exits 1 if counter != expected.
             fields: workers ops elapsed_ns ops_per_s counter expected handoffs
                     handoff_p50_ns handoff_p99_ns clients
  hammer     -name N -key K [-n COUNT]
             one worker of contend, to run beside another implementation on the same
             N and K (read K afterwards: no increment may be lost)
             fields: ops elapsed_ns

interoperability:
  hold       -name N -for D          take the lock, print held, hold it D, release
  elect      -name N -value V -for D campaign, print elected, lead D (0: until SIGTERM), resign
  observe    -name N -count C        print the first C leaders observed
  leader     -name N                 print the current leader, or no-leader
  rw         -name N -mode r|w -for D  take a read or write lock (recipe.RWMutex), hold D, release

common flags: -endpoints host:port[,...] (127.0.0.1:2379)  -ttl SECONDS (10)`

type flags struct {
	endpoints []string
	ttl       int
	name      string
	key       string
	value     string
	mode      string
	n         int
	workers   int
	clients   int
	count     int
	hold      time.Duration
	duration  time.Duration
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("etcd-go-bench: ")
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, usageText)
		os.Exit(2)
	}
	cmd := os.Args[1]
	commands := map[string]func(*flags){
		"lock-loop": lockLoop,
		"contend":   contend,
		"hammer":    hammer,
		"hold":      hold,
		"elect":     elect,
		"observe":   observe,
		"leader":    leader,
		"rw":        rw,
	}
	run, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s\n", cmd, usageText)
		os.Exit(2)
	}
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usageText) }
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	f := &flags{}
	fs.IntVar(&f.ttl, "ttl", 10, "session TTL in seconds")
	fs.StringVar(&f.name, "name", "peer-lock", "lock or election name (the key prefix)")
	fs.StringVar(&f.key, "key", "peer-counter", "counter key of contend and hammer")
	fs.StringVar(&f.value, "value", "go-peer", "election proposal")
	fs.StringVar(&f.mode, "mode", "w", "rw: r or w")
	fs.IntVar(&f.n, "n", 1000, "operations (per worker for contend)")
	fs.IntVar(&f.workers, "workers", 4, "contend: concurrent workers")
	fs.IntVar(&f.clients, "clients", 0, "contend: clients the workers share (0: one per worker)")
	fs.IntVar(&f.count, "count", 1, "observe: leaders to print")
	fs.DurationVar(&f.hold, "for", time.Second, "how long to hold or lead")
	fs.DurationVar(&f.duration, "duration", 0, "lock-loop, contend: run this long instead of -n operations")
	fs.Parse(os.Args[2:])
	f.endpoints = strings.Split(*endpoints, ",")
	if f.n < 0 || f.workers < 1 || f.clients < 0 || f.ttl < 1 || f.duration < 0 {
		log.Fatalf("bad flags: -n %d, -workers %d, -clients %d, -ttl %d, -duration %s (need n >= 0, workers >= 1, clients >= 0, ttl >= 1, duration >= 0)", f.n, f.workers, f.clients, f.ttl, f.duration)
	}
	run(f)
}

func dial(f *flags) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: f.endpoints, DialTimeout: 5 * time.Second})
	check(err)
	return c
}

func newSession(f *flags, c *clientv3.Client) *concurrency.Session {
	s, err := concurrency.NewSession(c, concurrency.WithTTL(f.ttl))
	check(err)
	return s
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func nowNs() int64 { return time.Now().UnixNano() }

// more tells a loop whether to run operation i: -n operations, or until the deadline.
func (f *flags) more(i int, start time.Time) bool {
	if f.duration > 0 {
		return time.Since(start) < f.duration
	}
	return i < f.n
}

// percentile is coord's too: the element at index (len-1)*p/100 of the sorted sample.
func percentile(sample []time.Duration, p int) int64 {
	if len(sample) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), sample...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100].Nanoseconds()
}

// progress prints the running count on stderr every 5 s, so that a long run shows it is
// alive; stdout keeps only the result line. The returned func stops it.
func progress(cmd string, done *int64, start time.Time) func() {
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				ops := atomic.LoadInt64(done)
				el := time.Since(start).Seconds()
				fmt.Fprintf(os.Stderr, "etcd-go-bench %s: %d ops in %.0f s (%.1f ops/s)\n", cmd, ops, el, float64(ops)/el)
			}
		}
	}()
	return func() { close(stop) }
}

func counter(c *clientv3.Client, key string) int {
	r, err := c.Get(context.Background(), key)
	check(err)
	if len(r.Kvs) == 0 {
		return 0
	}
	v, err := strconv.Atoi(string(r.Kvs[0].Value))
	if err != nil {
		log.Fatalf("counter %q is %q, not a number", key, r.Kvs[0].Value)
	}
	return v
}

// increment reads and writes back separately on purpose: the result is right only while
// the caller really holds the lock, which is what contend and hammer check.
func increment(c *clientv3.Client, key string) {
	v := counter(c, key)
	_, err := c.Put(context.Background(), key, strconv.Itoa(v+1))
	check(err)
}

func lockLoop(f *flags) {
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	m := concurrency.NewMutex(s, f.name)
	ctx := context.Background()
	var done int64
	lat := make([]time.Duration, 0, f.n)
	start := time.Now()
	stop := progress("lock-loop", &done, start)
	for i := 0; f.more(i, start); i++ {
		t := time.Now()
		check(m.Lock(ctx))
		check(m.Unlock(ctx))
		lat = append(lat, time.Since(t))
		atomic.AddInt64(&done, 1)
	}
	el := time.Since(start).Nanoseconds()
	stop()
	check(s.Close())
	ops := int64(len(lat))
	perOp := int64(0)
	if ops > 0 {
		perOp = el / ops
	}
	fmt.Printf("cmd=lock-loop ops=%d elapsed_ns=%d per_op_ns=%d p50_ns=%d p99_ns=%d\n",
		ops, el, perOp, percentile(lat, 50), percentile(lat, 99))
}

// handoffs records how long a lock takes to pass from one worker to a waiting one.
type handoffs struct {
	mu       sync.Mutex
	releaser int // the worker that called Unlock last; -1: none pending
	at       time.Time
	sample   []time.Duration
}

// acquired is called by worker w right after Lock returned; asked is when it called Lock.
func (h *handoffs) acquired(w int, asked, got time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.releaser >= 0 && h.releaser != w && asked.Before(h.at) {
		h.sample = append(h.sample, got.Sub(h.at))
	}
	h.releaser = -1
}

// releasing is called by worker w right before it calls Unlock.
func (h *handoffs) releasing(w int) {
	h.mu.Lock()
	h.releaser, h.at = w, time.Now()
	h.mu.Unlock()
}

func contend(f *flags) {
	c := dial(f)
	defer c.Close()
	_, err := c.Put(context.Background(), f.key, "0")
	check(err)
	h := &handoffs{releaser: -1}
	var ready, finished sync.WaitGroup
	begin := make(chan struct{})
	var start time.Time
	var done int64
	var shared []*clientv3.Client
	for i := 0; i < f.clients; i++ {
		sc := dial(f)
		defer sc.Close()
		shared = append(shared, sc)
	}
	for w := 0; w < f.workers; w++ {
		ready.Add(1)
		finished.Add(1)
		go func(w int) {
			defer finished.Done()
			var wc *clientv3.Client
			if len(shared) > 0 {
				wc = shared[w%len(shared)]
			} else {
				wc = dial(f)
				defer wc.Close()
			}
			s := newSession(f, wc)
			m := concurrency.NewMutex(s, f.name)
			ctx := context.Background()
			ready.Done()
			<-begin
			for i := 0; f.more(i, start); i++ {
				asked := time.Now()
				check(m.Lock(ctx))
				h.acquired(w, asked, time.Now())
				increment(wc, f.key)
				h.releasing(w)
				check(m.Unlock(ctx))
				atomic.AddInt64(&done, 1)
			}
			check(s.Close())
		}(w)
	}
	ready.Wait()
	start = time.Now()
	stop := progress("contend", &done, start)
	close(begin)
	finished.Wait()
	el := time.Since(start)
	stop()
	got := counter(c, f.key)
	total := int(atomic.LoadInt64(&done))
	clients := f.clients
	if clients == 0 {
		clients = f.workers
	}
	fmt.Printf("cmd=contend workers=%d ops=%d elapsed_ns=%d ops_per_s=%.1f counter=%d expected=%d handoffs=%d handoff_p50_ns=%d handoff_p99_ns=%d clients=%d\n",
		f.workers, total, el.Nanoseconds(), float64(total)/el.Seconds(), got, total,
		len(h.sample), percentile(h.sample, 50), percentile(h.sample, 99), clients)
	if got != total {
		log.Fatalf("counter %d != expected %d: mutual exclusion was broken", got, total)
	}
}

func hammer(f *flags) {
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	m := concurrency.NewMutex(s, f.name)
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < f.n; i++ {
		check(m.Lock(ctx))
		increment(c, f.key)
		check(m.Unlock(ctx))
	}
	el := time.Since(start).Nanoseconds()
	check(s.Close())
	fmt.Printf("cmd=hammer ops=%d elapsed_ns=%d\n", f.n, el)
}

func hold(f *flags) {
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	m := concurrency.NewMutex(s, f.name)
	ctx := context.Background()
	check(m.Lock(ctx))
	fmt.Printf("cmd=hold held key=%s rev=%d at_ns=%d\n", m.Key(), m.Header().Revision, nowNs())
	time.Sleep(f.hold)
	check(m.Unlock(ctx))
	fmt.Printf("cmd=hold released at_ns=%d\n", nowNs())
	check(s.Close())
}

func elect(f *flags) {
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	e := concurrency.NewElection(s, f.name)
	ctx := context.Background()
	check(e.Campaign(ctx, f.value))
	// Printed at once: a failover measurement takes the time this line appears.
	fmt.Printf("cmd=elect elected key=%s value=%s at_ns=%d\n", e.Key(), f.value, nowNs())
	if f.hold > 0 {
		time.Sleep(f.hold)
	} else {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
	}
	check(e.Resign(ctx))
	fmt.Printf("cmd=elect resigned at_ns=%d\n", nowNs())
	check(s.Close())
}

func observe(f *flags) {
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	defer s.Close()
	e := concurrency.NewElection(s, f.name)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := e.Observe(ctx)
	for i := 0; i < f.count; i++ {
		r, ok := <-updates
		if !ok {
			log.Fatal("the observer's channel closed")
		}
		fmt.Printf("cmd=observe leader_key=%s value=%s at_ns=%d\n", r.Kvs[0].Key, r.Kvs[0].Value, nowNs())
	}
}

func leader(f *flags) {
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	defer s.Close()
	r, err := concurrency.NewElection(s, f.name).Leader(context.Background())
	if err == concurrency.ErrElectionNoLeader {
		fmt.Println("cmd=leader no-leader")
		return
	}
	check(err)
	fmt.Printf("cmd=leader leader_key=%s value=%s\n", r.Kvs[0].Key, r.Kvs[0].Value)
}

func rw(f *flags) {
	if f.mode != "r" && f.mode != "w" {
		log.Fatalf("-mode is %q: it must be r or w", f.mode)
	}
	c := dial(f)
	defer c.Close()
	s := newSession(f, c)
	m := recipe.NewRWMutex(s, f.name)
	if f.mode == "r" {
		check(m.RLock())
	} else {
		check(m.Lock())
	}
	fmt.Printf("cmd=rw held mode=%s at_ns=%d\n", f.mode, nowNs())
	time.Sleep(f.hold)
	if f.mode == "r" {
		check(m.RUnlock())
	} else {
		check(m.Unlock())
	}
	fmt.Printf("cmd=rw released at_ns=%d\n", nowNs())
	check(s.Close())
}

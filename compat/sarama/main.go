// weir compatibility check: sarama, the Go client, as Debian packages it
// (golang-github-shopify-sarama-dev, import path github.com/Shopify/sarama).
//
// Needs env BOOTSTRAP=host:port. Creates a 3-partition topic, produces keyed
// messages with a SyncProducer (acks=all) and with an idempotent producer,
// reads every partition back with partition consumers and checks content and
// per-key order, then consumes the topic in a consumer group, commits, and
// checks the committed offsets and that a restarted group resumes from them.
// Exits 0 only when every check passed.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const (
	partitions = 3
	keys       = 10
	perKey     = 30 // messages per key from the plain producer
	idemPerKey = 5  // messages per key from the idempotent producer
)

var (
	failures []string
	checks   int
)

func pass(what string) {
	checks++
	fmt.Printf("ok:   %s\n", what)
}

func fail(what string, err error) {
	checks++
	msg := what
	if err != nil {
		msg = fmt.Sprintf("%s: %v", what, err)
	}
	failures = append(failures, msg)
	fmt.Printf("FAIL: %s\n", msg)
}

func fatal(what string, err error) {
	fail(what, err)
	finish()
}

func finish() {
	if len(failures) > 0 {
		fmt.Printf("sarama: %d of %d checks failed:\n", len(failures), checks)
		for _, f := range failures {
			fmt.Printf("  - %s\n", f)
		}
		os.Exit(1)
	}
	fmt.Printf("sarama: all %d checks passed\n", checks)
	os.Exit(0)
}

func baseConfig(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = clientID
	// The newest Kafka version this sarama knows. The default (0.8.2) would
	// send Produce v0 and message sets, which Kafka 4 and weir refuse.
	c.Version = sarama.V2_1_0_0
	c.Metadata.Retry.Max = 10
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	c.Net.DialTimeout = 10 * time.Second
	c.Net.ReadTimeout = 10 * time.Second
	c.Net.WriteTimeout = 10 * time.Second
	c.Admin.Timeout = 10 * time.Second
	return c
}

type sent struct {
	key, value string
	partition  int32
	offset     int64
}

func produce(brokers []string, topic string, idempotent bool, n int, tag string) ([]sent, error) {
	c := baseConfig("weir-compat-sarama-producer")
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Producer.Retry.Max = 5
	if idempotent {
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
	}
	p, err := sarama.NewSyncProducer(brokers, c)
	if err != nil {
		return nil, fmt.Errorf("NewSyncProducer: %w", err)
	}
	defer p.Close()
	var out []sent
	for i := 0; i < n; i++ {
		for k := 0; k < keys; k++ {
			key := fmt.Sprintf("key-%d", k)
			value := fmt.Sprintf("%s-%d-%d", tag, k, i)
			msg := &sarama.ProducerMessage{
				Topic:   topic,
				Key:     sarama.StringEncoder(key),
				Value:   sarama.StringEncoder(value),
				Headers: []sarama.RecordHeader{{Key: []byte("seq"), Value: []byte(strconv.Itoa(i))}},
			}
			part, off, err := p.SendMessage(msg)
			if err != nil {
				return out, fmt.Errorf("SendMessage %s=%s: %w", key, value, err)
			}
			out = append(out, sent{key, value, part, off})
		}
	}
	return out, nil
}

type got struct {
	key, value string
	partition  int32
	offset     int64
	seqHeader  string
}

func consumePartitions(brokers []string, topic string, want map[int32]int) (map[int32][]got, error) {
	c := baseConfig("weir-compat-sarama-consumer")
	c.Consumer.Return.Errors = true
	consumer, err := sarama.NewConsumer(brokers, c)
	if err != nil {
		return nil, fmt.Errorf("NewConsumer: %w", err)
	}
	defer consumer.Close()
	out := map[int32][]got{}
	for p := int32(0); p < partitions; p++ {
		if want[p] == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return out, fmt.Errorf("ConsumePartition %d: %w", p, err)
		}
		deadline := time.After(20 * time.Second)
	loop:
		for len(out[p]) < want[p] {
			select {
			case m := <-pc.Messages():
				seq := ""
				for _, h := range m.Headers {
					if string(h.Key) == "seq" {
						seq = string(h.Value)
					}
				}
				out[p] = append(out[p], got{string(m.Key), string(m.Value), m.Partition, m.Offset, seq})
			case e := <-pc.Errors():
				pc.Close()
				return out, fmt.Errorf("partition %d: %w", p, e.Err)
			case <-deadline:
				break loop
			}
		}
		if hw := pc.HighWaterMarkOffset(); hw != int64(want[p]) {
			pc.Close()
			return out, fmt.Errorf("partition %d: high watermark %d, want %d", p, hw, want[p])
		}
		pc.Close()
	}
	return out, nil
}

// groupHandler consumes until it has seen `want` messages in total.
type groupHandler struct {
	mu    sync.Mutex
	seen  map[string]bool
	count int
	want  int
	done  chan struct{}
	once  sync.Once
	setup int
	// values seen that do not start with prefix (when prefix is set)
	prefix  string
	foreign []string
}

func (h *groupHandler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	h.setup++
	h.mu.Unlock()
	return nil
}
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		h.mu.Lock()
		id := fmt.Sprintf("%d@%d", m.Partition, m.Offset)
		if !h.seen[id] {
			h.seen[id] = true
			h.count++
			if h.prefix != "" && !strings.HasPrefix(string(m.Value), h.prefix) {
				h.foreign = append(h.foreign, fmt.Sprintf("%s@%s", m.Value, id))
			}
		}
		n := h.count
		h.mu.Unlock()
		s.MarkMessage(m, "")
		if n >= h.want {
			h.once.Do(func() { close(h.done) })
		}
	}
	return nil
}

func groupConfig() *sarama.Config {
	c := baseConfig("weir-compat-sarama-group")
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	// With Retention 0 (the default) this sarama commits with OffsetCommit
	// v1, which Kafka 4 (KIP-896) and weir no longer accept; any retention
	// selects v2.
	c.Consumer.Offsets.Retention = 24 * time.Hour
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 1 * time.Second
	c.Consumer.Return.Errors = true
	return c
}

// runGroup consumes in group `group` until `want` messages were seen or the
// timeout passed; returns how many it saw.
func runGroup(brokers []string, topic, group string, want int, prefix string, timeout time.Duration) (int, error) {
	cg, err := sarama.NewConsumerGroup(brokers, group, groupConfig())
	if err != nil {
		return 0, fmt.Errorf("NewConsumerGroup: %w", err)
	}
	h := &groupHandler{seen: map[string]bool{}, want: want, done: make(chan struct{}), prefix: prefix}
	ctx, cancel := context.WithCancel(context.Background())
	var errs []string
	var emu sync.Mutex
	go func() {
		for e := range cg.Errors() {
			emu.Lock()
			errs = append(errs, e.Error())
			emu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil {
				emu.Lock()
				errs = append(errs, "Consume: "+err.Error())
				emu.Unlock()
				time.Sleep(500 * time.Millisecond)
			}
		}
	}()
	if want > 0 {
		select {
		case <-h.done:
		case <-time.After(timeout):
		}
	} else {
		time.Sleep(timeout)
	}
	cancel()
	wg.Wait()
	cerr := cg.Close() // commits the marked offsets
	h.mu.Lock()
	n := h.count
	h.mu.Unlock()
	emu.Lock()
	defer emu.Unlock()
	if cerr != nil {
		errs = append(errs, "Close: "+cerr.Error())
	}
	if len(h.foreign) > 0 {
		errs = append(errs, fmt.Sprintf("consumed %d messages from before the committed offsets, e.g. %s", len(h.foreign), h.foreign[0]))
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("group errors: %s", strings.Join(errs, "; "))
	}
	return n, nil
}

func main() {
	bootstrap := os.Getenv("BOOTSTRAP")
	if bootstrap == "" {
		fmt.Println("set BOOTSTRAP=host:port")
		os.Exit(2)
	}
	brokers := []string{bootstrap}
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().Unix())
	topic := "weir-compat-sarama-" + suffix
	group := "weir-compat-sarama-group-" + suffix

	// --- admin: create the topic, describe it
	admin, err := sarama.NewClusterAdmin(brokers, baseConfig("weir-compat-sarama-admin"))
	if err != nil {
		fatal("NewClusterAdmin", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		fatal("CreateTopic "+topic, err)
	}
	pass(fmt.Sprintf("CreateTopic %s with %d partitions", topic, partitions))
	md, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 || md[0].Err != sarama.ErrNoError || len(md[0].Partitions) != partitions {
		if err == nil && len(md) == 1 {
			err = fmt.Errorf("error %v, %d partitions", md[0].Err, len(md[0].Partitions))
		}
		fail("DescribeTopics", err)
	} else {
		pass("DescribeTopics shows the partitions")
	}

	// --- produce: acks=all, then idempotent
	plain, err := produce(brokers, topic, false, perKey, "plain")
	if err != nil {
		fatal("SyncProducer (acks=all)", err)
	}
	pass(fmt.Sprintf("SyncProducer acks=all: %d keyed messages acknowledged", len(plain)))
	idem, err := produce(brokers, topic, true, idemPerKey, "idem")
	if err != nil {
		fail("idempotent SyncProducer", err)
	} else {
		pass(fmt.Sprintf("idempotent SyncProducer: %d messages acknowledged", len(idem)))
	}
	all := append(append([]sent{}, plain...), idem...)

	// Each key went to one partition; offsets per partition are 0..n-1 in
	// send order.
	want := map[int32]int{}
	keyPart := map[string]int32{}
	bad := ""
	for _, s := range all {
		if p, ok := keyPart[s.key]; ok && p != s.partition {
			bad = fmt.Sprintf("key %s went to partitions %d and %d", s.key, p, s.partition)
		}
		keyPart[s.key] = s.partition
		if s.offset != int64(want[s.partition]) && bad == "" {
			bad = fmt.Sprintf("partition %d: message %s got offset %d, want %d", s.partition, s.value, s.offset, want[s.partition])
		}
		want[s.partition]++
	}
	if bad != "" {
		fail("produce offsets", fmt.Errorf("%s", bad))
	} else {
		pass(fmt.Sprintf("produce offsets are dense per partition (%v)", want))
	}
	used := 0
	for p := int32(0); p < partitions; p++ {
		if want[p] > 0 {
			used++
		}
	}
	if used < 2 {
		fail("hash partitioner spread", fmt.Errorf("only %d partitions used", used))
	}

	// --- partition consumers: everything back, in order, with headers
	gotMsgs, err := consumePartitions(brokers, topic, want)
	if err != nil {
		fail("partition consumers", err)
	}
	bySend := map[int32][]sent{}
	for _, s := range all {
		bySend[s.partition] = append(bySend[s.partition], s)
	}
	mismatch := ""
	total := 0
	for p := int32(0); p < partitions; p++ {
		g := gotMsgs[p]
		total += len(g)
		if len(g) != len(bySend[p]) {
			mismatch = fmt.Sprintf("partition %d: consumed %d, produced %d", p, len(g), len(bySend[p]))
			continue
		}
		for i, m := range g {
			s := bySend[p][i]
			if m.key != s.key || m.value != s.value || m.offset != s.offset {
				mismatch = fmt.Sprintf("partition %d #%d: got %s=%s@%d, want %s=%s@%d", p, i, m.key, m.value, m.offset, s.key, s.value, s.offset)
				break
			}
			if want := strings.Split(m.value, "-")[2]; m.seqHeader != want {
				mismatch = fmt.Sprintf("partition %d offset %d: header seq=%q, want %q", p, m.offset, m.seqHeader, want)
				break
			}
		}
	}
	if mismatch != "" {
		fail("partition consumers", fmt.Errorf("%s", mismatch))
	} else if err == nil {
		pass(fmt.Sprintf("partition consumers read all %d messages back in order, keys, values and headers intact", total))
	}

	// --- consumer group: consume all, commit, check, resume
	n, err := runGroup(brokers, topic, group, len(all), "", 30*time.Second)
	if n != len(all) {
		fail(fmt.Sprintf("consumer group consumed %d of %d messages", n, len(all)), err)
	} else if err != nil {
		fail("consumer group", err)
	} else {
		pass(fmt.Sprintf("consumer group %s consumed all %d messages", group, n))
	}
	parts := []int32{}
	for p := int32(0); p < partitions; p++ {
		parts = append(parts, p)
	}
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	if err != nil {
		fail("OffsetFetch (ListConsumerGroupOffsets)", err)
	} else {
		wrong := []string{}
		for _, p := range parts {
			b := resp.GetBlock(topic, p)
			if b == nil {
				wrong = append(wrong, fmt.Sprintf("p%d: no block", p))
				continue
			}
			exp := int64(want[p])
			if want[p] == 0 {
				exp = -1
			}
			if b.Err != sarama.ErrNoError || b.Offset != exp {
				wrong = append(wrong, fmt.Sprintf("p%d: committed %d (%v), want %d", p, b.Offset, b.Err, exp))
			}
		}
		sort.Strings(wrong)
		if len(wrong) > 0 {
			fail("committed offsets", fmt.Errorf("%s", strings.Join(wrong, ", ")))
		} else {
			pass("committed offsets equal the end offsets")
		}
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		fail("ListGroups", err)
	} else if _, ok := groups[group]; !ok {
		fail("ListGroups", fmt.Errorf("group %s not listed (%d groups)", group, len(groups)))
	} else {
		pass("ListGroups lists the group")
	}

	// A restarted group member resumes at the committed offsets: it sees only
	// what is produced after the commit.
	more, err := produce(brokers, topic, false, 1, "more")
	if err != nil {
		fail("produce after commit", err)
	}
	n, err = runGroup(brokers, topic, group, len(more), "more-", 30*time.Second)
	if err != nil || n != len(more) {
		fail(fmt.Sprintf("restarted group consumed %d messages, want exactly the %d new ones", n, len(more)), err)
	} else {
		pass(fmt.Sprintf("restarted group resumed from the committed offsets (%d new messages)", n))
	}

	if err := admin.DeleteTopic(topic); err != nil {
		fail("DeleteTopic", err)
	} else {
		pass("DeleteTopic")
	}
	admin.Close()
	finish()
}

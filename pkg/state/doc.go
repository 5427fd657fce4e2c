// Package state is the detector's durable, incremental state: per input
// partition, the distinct timestamps of every tuple inside the lookback
// window with an exact delta summary (beacon.Summary), the tuples of every
// destination, the domains of every RemoteIP, the stream time, the next
// offset to consume and an opaque blob of the caller's — all in one Pebble
// database per process, every batch of inputs applied atomically with the
// offset it consumed up to.
//
// The contract (DESIGN.md §3): at any moment, Partition.Evaluate(d) returns
// exactly what beacon.Hunt returns for destination d over the inputs applied
// so far, at now = stream time + 1 s (`hunt --end <stream time + 1s>`).
// The package applies no query rule of its own: it keeps windows and
// summaries, and asks beacon.Params (Candidate, SelectDestination, NewRow,
// Window, DomainsFrom) for every decision.
//
// # Windows
//
// The window at stream time S is p.Window(S + 1s) = [S + 1s − Lookback,
// S + 1s − EndOffset], both ends inclusive. A connection older than its
// start is dropped and counted as late; the others join their tuple's set
// (a duplicate timestamp changes nothing). With the query's EndOffset of 1 s
// the window ends at S and holds every connection applied. With EndOffset
// ≤ 1 s it is the same. With EndOffset > 1 s, connections newer than the
// window's end are stored as pending and enter the window as stream time
// moves (exactly as hunt, run later, would count them).
//
// Stream time moves to the newest connection of each batch first, so the
// state is a function of the set of inputs applied, whatever their order and
// batching.
//
// # Incremental summaries
//
// Deltas are whole seconds, so a tuple's summary (its delta histogram; n,
// Σd, Σd² follow from it) is exact and changes by one or two deltas per
// timestamp: an in-order timestamp adds one, an out-of-order one splits one
// (its neighbours are read from the blocks around it), eviction removes the
// first (the next timestamp is read from the oldest block). Tuples due for
// eviction are found in a heap ordered by their first timestamp. Deciding a
// destination reads summaries only; a tuple's timestamps are read only to
// render a row it keeps (TimeDeltaList, min/max index). Summaries are not
// stored: loading a partition recomputes them from its blocks.
//
// # Blocks and the write-back cache
//
// A tuple's timestamps are stored as blocks of up to 48 (blocks.go has the
// value's layout: delta-encoded at 100 ns, frame of reference or varints,
// ≈ 3.8 B per timestamp of a jittered beacon). Decoded blocks are cached in
// an LRU bounded by WithMemoryBudget; Apply changes cached blocks only, and
// the changed ones are written at the commit, in the same atomic batch as
// the offset. Eviction writes nothing: a block partly before the window
// start keeps its dead timestamps until it is next written, and a block of
// dead timestamps only is deleted whole.
//
// # Key layout
//
// Every key of a partition starts with its id (4 bytes, big-endian), so
// DropPartition is one DeleteRange; the next byte is the kind. Integers are
// big-endian; times are beacon.Time with the sign bit flipped, so that byte
// order is time order.
//
//	key                                   value
//	pid 'h'                               header: layout version, next offset (varint,
//	                                      −1 none), stream time, tuple slots in use
//	pid 'm'                               the caller's blob (Apply's meta)
//	pid 'k' id(8)                         tuple: its seven columns (written once)
//	pid 't' id(8) start(8)                a block of the tuple's timestamps in
//	                                      [start, next block's start)
//	pid 'd' ip 0x00 domain                newest time the (ip, domain) pair was seen
//	0xFF 0xFF "state-cfg"                 layout version, lookback and end offset
//
// Tuple ids are per partition and 32-bit: a tuple's id is its slot in the
// in-memory arena, and a tuple whose window empties is deleted with its
// blocks and its id given to the next new tuple, so ids stay below the most
// tuples the partition held at once. Layout 3 (ids reused) refuses a store
// of layout 2 (ids never reused, so sparse) with ErrParamsChanged.
// docs/state.md has the measured bytes per tuple and per timestamp.
//
// # Durability
//
// A commit writes the changed blocks, deletions, new tuples, domains,
// header (with the offset) and blob in one Pebble batch. Pebble's
// write-ahead log makes it atomic: after a crash, a reopened store holds the
// state of the last committed offset exactly, and the consumer resumes
// there. Every Apply commits, unless WithCommitEvery holds commits back (then
// a crash resumes from an older offset). Commits do not fsync: a lost tail
// of the log loses its offsets with it, and the consumer re-reads it;
// WithInMemory keeps scratch state off the disk.
package state

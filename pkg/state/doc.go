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
// Deltas are whole seconds, so a tuple's summary (n, Σd, Σd², histogram)
// is exact and changes by one or two deltas per timestamp: an in-order
// timestamp adds one (no read), an out-of-order one splits one (its
// neighbours are read with one Pebble seek, or found in the tuple's head, an
// in-memory copy of its oldest eight timestamps), eviction removes the first
// (read from the head, refilled from Pebble once per eight). Tuples due for
// eviction are found in a heap ordered by their first timestamp. Deciding a
// destination reads summaries only; a tuple's timestamps are read from
// Pebble only to render a row it keeps (TimeDeltaList, min/max index).
//
// # Key layout
//
// Every key of a partition starts with its id (4 bytes, big-endian), so
// DropPartition is one DeleteRange; the next byte is the kind. Integers are
// big-endian; times are beacon.Time with the sign bit flipped, so that byte
// order is time order.
//
//	key                                   value
//	pid 'h'                               header: version, next offset (varint, −1 none),
//	                                      stream time, next tuple id
//	pid 'm'                               the caller's blob (Apply's meta)
//	pid 'k' id(8)                         tuple: its seven columns (written once)
//	pid 's' id(8)                         summary: distinct, first, last, pending, histogram
//	pid 't' id(8) time(8)                 empty: one key per distinct timestamp
//	pid 'd' ip 0x00 domain                newest time the (ip, domain) pair was seen
//	0xFF 0xFF "state-cfg"                 lookback and end offset the store was built with
//
// Tuple ids are assigned per partition in order of first sight and never
// reused; a tuple whose window empties is deleted. The summary of every
// tuple a batch touched is rewritten with the batch (a histogram of more
// than 64 bins is left out and recomputed from the timestamps on load).
// docs/state.md has the measured bytes per tuple and per timestamp.
//
// # Durability
//
// Apply writes the batch's timestamps, summaries, domains, header (with the
// offset) and blob in one Pebble batch. Pebble's write-ahead log makes it
// atomic: after a crash, a reopened store holds the state of the last
// recorded offset exactly, and the consumer resumes there. WithSync decides
// whether a batch also survives a power loss.
package state

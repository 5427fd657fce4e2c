// Package beacon holds the detection semantics: the seed query ("Suspicious
// Network Beacons", KQL over DeviceNetworkEvents) reproduced to the row, and
// the robust profile that goes beyond it. It knows nothing of files or
// Kafka: decoders live in pkg/mde, windows in Pebble in pkg/state, the
// streaming detector in pkg/stream.
//
// The pieces, in the order an event meets them:
//
//   - Event is one DeviceNetworkEvents row, reduced to what detection reads.
//   - Params holds every parameter of a profile (Seed(), Robust()) and
//     makes every decision: which rows are connections (Connection), how
//     they form tuples (TupleOf), whether a tuple's delta Summary makes it a
//     candidate (Candidate), which candidates of a destination survive the
//     device cap (SelectDestination), and how a kept tuple renders (NewRow).
//     pkg/state asks the same methods, so the streaming path does not know
//     which profile it runs.
//   - Summary is the exact, incremental statistic of a tuple's whole-second
//     deltas (n, Σd, Σd², histogram): percentiles, stdev and Tukey outliers
//     come from it without the list.
//   - Hunt is the batch query over a set of events; Row is one output row;
//     WriteTable, WriteJSONL and WriteCSV render rows.
//
// docs/semantics.md maps each rule of the query to its code and test;
// docs/robust.md does the same for the robust profile.
package beacon

// Package mde reads Microsoft Defender for Endpoint DeviceNetworkEvents in
// every shape users have them (see DESIGN §5), for hunt (files), run
// (Kafka record values) and replay:
//
//   - flat rows, one JSON object per line (an Advanced Hunting export, or a
//     pipeline that flattened records);
//   - Streaming API records {"time","tenantId","category","properties":{…}},
//     one per line as the Streaming API writes them to a storage account
//     (CRLF, sometimes an extra _TimeReceivedBySvc), or as Logstash and
//     Elastic's agent hand them over; properties.Timestamp is the event
//     time, time is when Defender received it;
//   - Event Hubs messages, envelopes {"records":[record, …]}, also
//     wrapped as Splunk's add-on for Microsoft Cloud Services keeps them
//     ({"body": message, "x-opt-…": …});
//   - pretty-printed or concatenated JSON values, a value spanning lines
//     (errors name the line the value or row starts at);
//   - JSON arrays of rows, records or envelopes;
//   - the Advanced Hunting API response {"Schema":[…],"Results":[rows]}
//     and Microsoft Graph runHuntingQuery's {"schema":[…],"results":[rows]}
//     (rows are keyed by column name, so the schema is not read);
//   - CSV exports with a header row, told by its column names; a union
//     export's extra columns are ignored and rows whose Type names another
//     table are left out; a missing required column is one error;
//   - Event Hubs Capture Avro container files (the message in Body), and
//     Avro rows of schemas/DeviceNetworkEvent.avsc;
//   - any of these gzip-compressed, with a UTF-8 BOM, with CRLF line ends,
//     or in UTF-16 with its byte order mark (Windows PowerShell 5.1's
//     Out-File and >; Export-Csv's #TYPE line before a header is skipped).
//
// JSON is read line by line, lines decoded in parallel, unless a value
// among the first 64 KiB spans lines (spansLines): then value by value,
// in one goroutine.
//
// Values: unknown keys are ignored; null and "" both mean missing; ports
// are JSON numbers, strings, or empty/null when missing; ReportId and
// InitiatingProcessId are 64-bit, numbers or strings; AdditionalFields (a
// JSON-encoded string or an object) is parsed only for *AggregatedReport
// rows, for uniqueEventsAggregated. Records whose category is another
// table's are left out and counted, not reported as errors.
//
// The decoder is written for speed: values the query does not need are
// skipped without unescaping or copying, strings without escapes alias the
// input, and events are appended to reused slices. Large regular files
// are decoded from a read-only mapping, not copied through buffers.
package mde

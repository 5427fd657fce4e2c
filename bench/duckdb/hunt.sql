-- The seed query ("Suspicious Network Beacons", Cyb3rMonk; ../../docs/semantics.md)
-- over the view events (source-flat.sql or source-envelope.sql), with the
-- parameters as DuckDB variables (hunt.mjs sets them from hunt's flags):
--   now                 BIGINT ticks (100 ns) or NULL: the newest Timestamp
--                       among rows that pass the filters, + 1 s (hunt's default)
--   lookback, end_offset BIGINT ticks: the window is [now-lookback, now-end_offset]
--   events_min, events_max        BIGINT: distinct timestamps > min and < max
--   jitter_threshold              DOUBLE
--   outlier_threshold_max, outlier_threshold_low  DOUBLE (low: -OutlierCountMax in seed)
--   outlier_count_max, device_count_max            BIGINT
--   action_types        VARCHAR[]
--   sleep_min, sleep_max DOUBLE, 0 = off
-- Columns and order are those of `beacon hunt --format jsonl`; timestamps
-- are left as ticks (hunt.mjs renders them as Kusto does).
WITH
-- Each row once, reduced to what the query reads; conn0: the row filters
-- other than ipv4_is_private (ActionType, the list with its typos;
-- RemoteIPType; RemoteIP).
ev AS MATERIALIZED (
    SELECT ticks, DeviceId, DeviceName, AccountName, AccountDomain, FileName, RemoteIP, RemotePort, RemoteUrl,
           list_contains(getvariable('action_types'), ActionType)
           AND RemoteIPType NOT IN ('Reserved', 'Private', 'LinkLocal', 'Loopback')
           AND RemoteIP <> '' AND RemoteIP <> '0.0.0.0' AS conn0
    FROM events
),
-- not(ipv4_is_private(RemoteIP)), decided once per distinct address
-- (NULL, not IPv4, drops the row).
public AS (
    SELECT RemoteIP FROM (SELECT DISTINCT RemoteIP FROM ev WHERE conn0) WHERE NOT ipv4_is_private(RemoteIP)
),
conn AS MATERIALIZED (
    SELECT ticks, DeviceId, DeviceName, AccountName, AccountDomain, FileName, RemoteIP, RemotePort
    FROM ev SEMI JOIN public USING (RemoteIP)
    WHERE conn0
),
clock AS (
    SELECT coalesce(getvariable('now'), max(ticks) + 10000000) AS now FROM conn
),
win AS (
    SELECT now - getvariable('lookback') AS lo, now - getvariable('end_offset') AS hi,
           now - getvariable('lookback') - 864000000000 AS domains_after
    FROM clock
),
-- make_set(Timestamp) by the seven columns, sorted; a null RemotePort
-- forms no tuple (null == null is not true in the mv-apply).
tuples AS (
    SELECT * EXCLUDE (raw), list_sort(list_distinct(raw)) AS ts
    FROM (SELECT DeviceId, DeviceName, AccountName, AccountDomain, FileName, RemoteIP, RemotePort,
                 list(ticks) AS raw
          FROM conn, win
          WHERE RemotePort IS NOT NULL AND ticks BETWEEN lo AND hi
          GROUP BY ALL
          HAVING count(*) > getvariable('events_min'))   -- at least the distinct count
),
-- TimeDeltaInSeconds = datetime_diff('second', next, this): whole-second
-- boundaries crossed.
deltas AS (
    SELECT * EXCLUDE (secs),
           list_transform(range(1, len(secs)), lambda i: secs[i + 1] - secs[i]) AS d
    FROM (SELECT *, list_transform(ts, lambda t: tick_second(t)) AS secs
          FROM tuples
          WHERE len(ts) > getvariable('events_min') AND len(ts) < getvariable('events_max') AND len(ts) >= 2)
),
sums AS (
    SELECT *, len(d) AS n, list_sum(d)::BIGINT AS s,
           list_sum(list_transform(d, lambda x: x * x))::BIGINT AS sq,
           list_sort(d) AS sorted
    FROM deltas
),
-- series_stats: sample variance from the exact integer sums, as
-- beacon.sampleVariance: (nΣd² − (Σd)²) / (n(n−1)).
stats AS (
    SELECT *, sqrt(variance) AS stdev
    FROM (SELECT *, s::DOUBLE / n::DOUBLE AS avg,
                 CASE WHEN n < 2 THEN 0::DOUBLE
                      ELSE (n::HUGEINT * sq - s::HUGEINT * s)::DOUBLE / (n::DOUBLE * (n - 1)::DOUBLE) END AS variance
          FROM sums)
),
-- Jitter < JitterThreshold (avg 0 gives NaN, which fails).
candidates AS (
    SELECT *, (stdev / avg) * 100::DOUBLE AS jitter
    FROM stats
    WHERE (stdev / avg) * 100::DOUBLE < getvariable('jitter_threshold')
      AND NOT isnan((stdev / avg) * 100::DOUBLE)
),
-- percentiles(…, 5, 25, 50, 75, 95): nearest rank, sorted[ceil(P/100·n)];
-- series_outliers: P10/P90 linearly interpolated at index p·(n−1).
ranked AS (
    SELECT *,
        list_transform([5, 25, 50, 75, 95], lambda pc:
            sorted[greatest(1, least(n, ceil(pc::DOUBLE * n::DOUBLE / 100::DOUBLE)::BIGINT))]) AS pct,
        list_transform([10, 90], lambda pc: CASE
            WHEN (n - 1) * pc % 100 = 0 THEN sorted[(n - 1) * pc // 100 + 1]::DOUBLE
            ELSE sorted[(n - 1) * pc // 100 + 1]::DOUBLE
                 + (((n - 1) * pc % 100)::DOUBLE / 100::DOUBLE)
                   * (sorted[(n - 1) * pc // 100 + 2]::DOUBLE - sorted[(n - 1) * pc // 100 + 1]::DOUBLE) END) AS p1090
    FROM candidates
),
scored AS (
    SELECT *,
        len(list_filter(d, lambda x:
            (CASE WHEN x > p1090[2] THEN (x::DOUBLE - p1090[2]) / (p1090[2] - p1090[1]) * '2.772605605507915'::DOUBLE
                  WHEN x < p1090[1] THEN (x::DOUBLE - p1090[1]) / (p1090[2] - p1090[1]) * '2.772605605507915'::DOUBLE
                  ELSE 0::DOUBLE END) > getvariable('outlier_threshold_max')
            OR (CASE WHEN x > p1090[2] THEN (x::DOUBLE - p1090[2]) / (p1090[2] - p1090[1]) * '2.772605605507915'::DOUBLE
                     WHEN x < p1090[1] THEN (x::DOUBLE - p1090[1]) / (p1090[2] - p1090[1]) * '2.772605605507915'::DOUBLE
                     ELSE 0::DOUBLE END) < getvariable('outlier_threshold_low'))) AS outliers,
        count(DISTINCT DeviceId) OVER (PARTITION BY FileName, RemoteIP, RemotePort) AS dcount_DeviceId
    FROM ranked
),
-- dcount(DeviceId) over the candidates of a destination ≤ the cap; at
-- most OutlierCountMax outliers; the optional sleep bounds.
kept AS (
    SELECT * FROM scored
    WHERE dcount_DeviceId <= getvariable('device_count_max')
      AND outliers <= getvariable('outlier_count_max')
      AND (getvariable('sleep_min') = 0 OR avg >= getvariable('sleep_min'))
      AND (getvariable('sleep_max') = 0 OR avg <= getvariable('sleep_max'))
),
-- Domains: make_set(domain) by RemoteIP over every row (no filters) with
-- Timestamp > now − lookback − 1d, no upper bound; computed once per
-- distinct (RemoteIP, RemoteUrl) of the kept rows' addresses.
domains AS (
    SELECT RemoteIP, list_sort(list(DISTINCT domain_of(RemoteUrl))) AS Domains
    FROM (SELECT DISTINCT ev.RemoteIP, ev.RemoteUrl
          FROM ev, win
          WHERE ev.ticks > win.domains_after AND ev.RemoteIP IN (SELECT RemoteIP FROM kept))
    GROUP BY RemoteIP
)
SELECT k.DeviceId, k.DeviceName,
       k.AccountName AS InitiatingProcessAccountName,
       k.AccountDomain AS InitiatingProcessAccountDomain,
       k.FileName AS InitiatingProcessFileName,
       k.RemoteIP, k.RemotePort,
       n AS count_,
       ts[1] AS min_Timestamp,
       ts[len(ts) - 1] AS max_Timestamp,            -- the second-to-last: rows with a next one
       tick_second(ts[len(ts) - 1]) - tick_second(ts[1]) AS Duration,
       pct[1] AS percentile_TimeDeltaInSeconds_5,
       pct[2] AS percentile_TimeDeltaInSeconds_25,
       pct[3] AS percentile_TimeDeltaInSeconds_50,
       pct[4] AS percentile_TimeDeltaInSeconds_75,
       pct[5] AS percentile_TimeDeltaInSeconds_95,
       d AS TimeDeltaList,
       sorted[1] AS TimeDeltaInSeconds_min,
       list_position(d, sorted[1]) - 1 AS TimeDeltaInSeconds_min_index,
       sorted[n] AS TimeDeltaInSeconds_max,
       list_position(d, sorted[n]) - 1 AS TimeDeltaInSeconds_max_index,
       avg AS TimeDeltaInSeconds_avg,
       stdev AS TimeDeltaInSeconds_stdev,
       variance AS TimeDeltaInSeconds_variance,
       jitter AS Jitter,
       avg - stdev AS BeaconSleepMin,
       avg + stdev AS BeaconSleepMax,
       coalesce(dm.Domains, []) AS Domains,
       dcount_DeviceId,
       ts[1] AS "Timestamp"
FROM kept k LEFT JOIN domains dm ON k.RemoteIP = dm.RemoteIP
ORDER BY Jitter, TimeDeltaInSeconds_avg, k.DeviceId, k.DeviceName, k.AccountName, k.AccountDomain,
         k.FileName, k.RemoteIP, k.RemotePort;

-- Scalar helpers of the seed query, as DuckDB macros. Each mirrors one
-- function of pkg/beacon (named beside it) so that the rows can be equal.

-- floor(a / b) for BIGINT (DuckDB's // truncates toward zero).
CREATE OR REPLACE TEMP MACRO floordiv(a, b) AS
    a // b - CASE WHEN a % b < 0 THEN 1 ELSE 0 END;

-- The whole second a 100 ns tick count falls in: beacon.Time.Seconds.
-- datetime_diff('second', b, a) = tick_second(b) - tick_second(a).
CREATE OR REPLACE TEMP MACRO tick_second(t) AS floordiv(t, 10000000);

-- A Defender Timestamp as nanoseconds since the epoch (the sources turn
-- them into 100 ns ticks with floordiv): DuckDB's own
-- TIMESTAMP_NS parser (ISO 8601, T or space, 0-9 fractional digits,
-- Z / +hh:mm / none = UTC; digits past the seventh truncated, as
-- beacon.ParseTime). NULL when it cannot be read, so the row is dropped
-- as hunt skips the line. DuckDB's parser also takes forms hunt refuses
-- (a date alone, +hhmm, a trailing " UTC"); hunt.mjs --strict replaces
-- this macro by ns_of_strict.
CREATE OR REPLACE TEMP MACRO ns_of(s) AS epoch_ns(TRY_CAST(s AS TIMESTAMP_NS));

-- ns_of, refusing what beacon.ParseTime refuses: yyyy-mm-dd, T or
-- space, hh:mm:ss, an optional fraction, Z / ±hh:mm / nothing.
CREATE OR REPLACE TEMP MACRO ns_of_strict(s) AS CASE
    WHEN regexp_full_match(s, '\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?')
    THEN epoch_ns(TRY_CAST(s AS TIMESTAMP_NS)) END;

-- A RemotePort as hunt reads it (mde.ParsePort): null or "" is no port;
-- else an integer, or a number with an integral value, in int32; anything
-- else makes the row malformed. port_ok takes the text and its
-- TRY_CAST(… AS DOUBLE), computed once by the caller. (DuckDB's cast
-- also reads " 443", "0x1BB" and "4_43", which hunt refuses.)
CREATE OR REPLACE TEMP MACRO port_ok(s, d) AS
    s IS NULL OR s = '' OR (d = trunc(d) AND d BETWEEN -2147483648 AND 2147483647);

-- ipv4_is_private (beacon.IPv4IsPrivate): NULL when s is not dotted-quad
-- IPv4 (1-3 digits an octet, at most 255, leading zeros allowed) with an
-- optional /0-/32, else whether it is in 10/8, 172.16/12 or 192.168/16.
-- The query keeps a row when this is false: not NULL (IPv6, text) and not
-- private. Written as two whole-string matches so that no value is parsed
-- twice per row.
CREATE OR REPLACE TEMP MACRO ipv4_is_private(s) AS CASE
    WHEN regexp_full_match(s, '(?:[01]?\d?\d|2[0-4]\d|25[0-5])\.(?:[01]?\d?\d|2[0-4]\d|25[0-5])\.(?:[01]?\d?\d|2[0-4]\d|25[0-5])\.(?:[01]?\d?\d|2[0-4]\d|25[0-5])(?:/0?(?:[0-2]?\d|3[0-2]))?')
    THEN regexp_full_match(s, '(?:0?10\.(?:[01]?\d?\d|2[0-4]\d|25[0-5])|172\.0?(?:1[6-9]|2\d|3[01])|192\.168)\.(?:[01]?\d?\d|2[0-4]\d|25[0-5])\.(?:[01]?\d?\d|2[0-4]\d|25[0-5])(?:/0?(?:[0-2]?\d|3[0-2]))?') END;

-- reverse() by code points, as Kusto's (DuckDB's reverse() keeps
-- grapheme clusters together).
CREATE OR REPLACE TEMP MACRO reverse_cp(s) AS array_to_string(list_reverse(string_split(s, '')), '');

-- parse_url(u).Host (beacon.urlHost): the authority of scheme://authority
-- without user info and port; '' when u is not an absolute URL.
CREATE OR REPLACE TEMP MACRO url_authority(u) AS
    regexp_replace(regexp_extract(u, '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)', 1), '(?s)^.*@', '');
CREATE OR REPLACE TEMP MACRO url_host_of_authority(auth) AS CASE
    WHEN starts_with(auth, '[') THEN
        CASE WHEN strpos(auth, ']') > 0 THEN auth[1:strpos(auth, ']')] ELSE auth END
    ELSE regexp_replace(auth, ':[^:]*$', '') END;
CREATE OR REPLACE TEMP MACRO url_host(u) AS CASE
    WHEN regexp_matches(u, '^[A-Za-z][A-Za-z0-9+.-]*://') THEN url_host_of_authority(url_authority(u))
    ELSE '' END;

-- The query's domain of one RemoteUrl (beacon.DomainOf):
--   Host = tostring(parse_url(iif(RemoteUrl !startswith "http", strcat(@'http://',RemoteUrl),RemoteUrl)).Host)
--   domain = reverse(replace(@'([A-z0-9-]+\.[A-z0-9-]+\.[A-z0-9-]+)\..*',@'\1',reverse(Host)))
-- startswith is case-insensitive. Used once per distinct URL, not per row.
CREATE OR REPLACE TEMP MACRO domain_of_host(host) AS
    reverse_cp(regexp_replace(reverse_cp(host), '([A-z0-9-]+\.[A-z0-9-]+\.[A-z0-9-]+)\..*', '\1', 'g'));
CREATE OR REPLACE TEMP MACRO domain_of(url) AS
    domain_of_host(url_host(CASE WHEN lower(url[1:4]) = 'http' THEN url ELSE 'http://' || url END));

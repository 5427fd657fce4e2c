-- events: the DeviceNetworkEvents rows of a file of flat JSON lines (one
-- row per line, the Advanced Hunting column names), reduced to the
-- columns the query reads. getvariable('file') is the path (a .gz is
-- read as gzip). Strings that are null or missing are '' (Kusto has no
-- null strings); a line whose Timestamp or RemotePort hunt would reject
-- is dropped, as hunt skips it.
CREATE OR REPLACE TEMP VIEW events AS
SELECT floordiv(ns, 100) AS ticks, DeviceId, DeviceName, ActionType, RemoteIP, RemoteIPType,
       pd::INTEGER AS RemotePort, RemoteUrl, AccountName, AccountDomain, FileName
FROM (
    SELECT ns_of("Timestamp") AS ns, RemotePort AS port, TRY_CAST(RemotePort AS DOUBLE) AS pd,
           coalesce(DeviceId, '') AS DeviceId,
           coalesce(DeviceName, '') AS DeviceName,
           coalesce(ActionType, '') AS ActionType,
           coalesce(RemoteIP, '') AS RemoteIP,
           coalesce(RemoteIPType, '') AS RemoteIPType,
           coalesce(RemoteUrl, '') AS RemoteUrl,
           coalesce(InitiatingProcessAccountName, '') AS AccountName,
           coalesce(InitiatingProcessAccountDomain, '') AS AccountDomain,
           coalesce(InitiatingProcessFileName, '') AS FileName,
           "Type"
    FROM read_json(getvariable('file'), format = 'newline_delimited', maximum_object_size = 67108864, ignore_errors = true,
        columns = {
            'Timestamp': 'VARCHAR', 'DeviceId': 'VARCHAR', 'DeviceName': 'VARCHAR',
            'ActionType': 'VARCHAR', 'RemoteIP': 'VARCHAR', 'RemoteIPType': 'VARCHAR',
            'RemotePort': 'VARCHAR', 'RemoteUrl': 'VARCHAR',
            'InitiatingProcessAccountName': 'VARCHAR', 'InitiatingProcessAccountDomain': 'VARCHAR',
            'InitiatingProcessFileName': 'VARCHAR',
            'Type': 'VARCHAR'
        })
)
-- A union export's rows of other tables are not DeviceNetworkEvents.
WHERE ns IS NOT NULL AND port_ok(port, pd)
  AND coalesce("Type", '') IN ('', 'DeviceNetworkEvents', 'AdvancedHunting-DeviceNetworkEvents');

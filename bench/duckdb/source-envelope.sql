-- events: the DeviceNetworkEvents records of a file of Streaming API
-- lines, either one record per line as a storage account holds them,
--   {"time":…,"tenantId":…,"category":"AdvancedHunting-DeviceNetworkEvents","properties":{…}}
-- or an Event Hubs message per line, {"records":[record, …]}; both may
-- be mixed. The row is properties (properties.Timestamp, not time).
-- Records of other tables (category) are left out; a record whose
-- Timestamp or RemotePort hunt would reject is dropped and the line's
-- other records kept, as hunt does.
CREATE OR REPLACE TEMP VIEW events AS
SELECT ticks, DeviceId, DeviceName, ActionType, RemoteIP, RemoteIPType, port.port AS RemotePort,
       RemoteUrl, AccountName, AccountDomain, FileName
FROM (
    SELECT ticks_of(r.properties."Timestamp") AS ticks,
           coalesce(r.properties.DeviceId, '') AS DeviceId,
           coalesce(r.properties.DeviceName, '') AS DeviceName,
           coalesce(r.properties.ActionType, '') AS ActionType,
           coalesce(r.properties.RemoteIP, '') AS RemoteIP,
           coalesce(r.properties.RemoteIPType, '') AS RemoteIPType,
           port_of(r.properties.RemotePort) AS port,
           coalesce(r.properties.RemoteUrl, '') AS RemoteUrl,
           coalesce(r.properties.InitiatingProcessAccountName, '') AS AccountName,
           coalesce(r.properties.InitiatingProcessAccountDomain, '') AS AccountDomain,
           coalesce(r.properties.InitiatingProcessFileName, '') AS FileName,
           r.category AS category
    FROM (
        SELECT unnest(CASE WHEN records IS NULL
                           THEN [{'category': category, 'properties': properties}]
                           ELSE records END) AS r
        FROM read_json(getvariable('file'), format = 'newline_delimited', maximum_object_size = 67108864,
            columns = {
                'records': 'STRUCT(category VARCHAR, properties STRUCT("Timestamp" VARCHAR, DeviceId VARCHAR, DeviceName VARCHAR, ActionType VARCHAR, RemoteIP VARCHAR, RemoteIPType VARCHAR, RemotePort VARCHAR, RemoteUrl VARCHAR, InitiatingProcessAccountName VARCHAR, InitiatingProcessAccountDomain VARCHAR, InitiatingProcessFileName VARCHAR))[]',
                'category': 'VARCHAR',
                'properties': 'STRUCT("Timestamp" VARCHAR, DeviceId VARCHAR, DeviceName VARCHAR, ActionType VARCHAR, RemoteIP VARCHAR, RemoteIPType VARCHAR, RemotePort VARCHAR, RemoteUrl VARCHAR, InitiatingProcessAccountName VARCHAR, InitiatingProcessAccountDomain VARCHAR, InitiatingProcessFileName VARCHAR)'
            })
    )
)
WHERE ticks IS NOT NULL AND port.ok
  AND coalesce(category, '') IN ('', 'DeviceNetworkEvents', 'AdvancedHunting-DeviceNetworkEvents');

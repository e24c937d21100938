"""Atom names and store keys. Persisted runs refer to these: never rename one once released."""

FLOW_NAME = "live-migration"

# atoms, in flow order
SENTINEL = "sentinel"
VALIDATE = "validate"
SELECT_DESTINATION = "select-destination"
RESCHEDULE = "reschedule"
SCHEDULE = "schedule"
CLAIM = "claim-destination"
CHECK_HYPERVISOR = "check-hypervisor"
CHECK_DESTINATION = "check-destination"
CHECK_SOURCE = "check-source"
PRE_LIVE_MIGRATION = "pre-live-migration"
TRANSFER = "transfer"
FINISH = "finish"
ROLL_FORWARD = "roll-forward"
POST_AT_SOURCE = "post-at-source"
POST_AT_DESTINATION = "post-at-destination"
COMPLETE = "complete"

#: the last atom whose success moves the VM: nothing after it is ever reverted past it
SWITCHOVER_AFTER = TRANSFER

PRE_SWITCHOVER_ATOMS = (
    SENTINEL,
    VALIDATE,
    RESCHEDULE,
    SCHEDULE,
    CLAIM,
    CHECK_HYPERVISOR,
    CHECK_DESTINATION,
    CHECK_SOURCE,
    PRE_LIVE_MIGRATION,
    TRANSFER,
)
POST_SWITCHOVER_ATOMS = (ROLL_FORWARD, POST_AT_SOURCE, POST_AT_DESTINATION, COMPLETE)
ALL_ATOMS = PRE_SWITCHOVER_ATOMS + POST_SWITCHOVER_ATOMS

# store keys: inputs (persisted with the run)
MIGRATION_ID = "migration_id"
REQUEST = "request"
SETTINGS = "settings"
# store key of the process-local resolver (injected transiently, never persisted)
CONTEXT = "context"
# store keys: values provided by atoms
INSTANCE = "instance"
SOURCE = "source_host"
EXCLUDED = "excluded_hosts"
DESTINATION = "destination"
DEST_CHECK = "dest_check_data"
MIGRATE_DATA = "migrate_data"
PREPARED = "prepared_migrate_data"
TRANSFER_RESULT = "transfer_result"
ATTEMPT = "post_attempt"

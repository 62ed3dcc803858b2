//! Every contract and end-to-end case on the AWS adapters against the local emulator (moto).
//! Run through `make test` (or localstack/with-emulator.sh): without the emulator every test fails.

use helix_tests::Backend;

helix_tests::common_suite!(Backend::Emulator);

helix_tests::cases!(Backend::Emulator;
    meta_store_outage_is_503_and_changes_nothing,
    a_commit_whose_answer_is_lost_is_resolved_or_reported_as_unknown,
    declaring_a_lax_store_checksum_verifying_fails_at_start,
    a_stalled_store_fails_requests_in_bounded_time_and_loses_no_acknowledged_write,
    a_strict_s3_refuses_tampered_uploads_and_forged_urls_and_the_registry_still_verifies,
    receipts_verify_with_an_independent_ecdsa_implementation,
    signer_outage_fails_readiness_and_status,
    mixed_backends_s3_blobs_with_embedded_meta_and_key_serve_together,
    s3_without_strict_no_overwrite_still_verifies_existing_objects,
    function_binaries_serve_api_gateway_events_as_lambdas,
    function_binary_with_bad_configuration_fails_at_init_naming_the_variable,
    console_function_serves_the_assets_with_their_policy,
    aws_tls_verifies_certificates_and_trusts_the_host_store_for_custom_endpoints,
    audit_export_binary_answers_the_scheduled_event,
    read_records_reach_the_audit_trail_through_the_log_subscription_once,
    notify_binary_puts_stream_records_on_eventbridge_and_signs_webhooks_reporting_failed_records,
    notify_binary_reads_the_webhook_key_from_secrets_manager_and_signs_with_it,
    each_function_builds_only_the_sdk_clients_its_requests_use,
    a_direct_upload_is_promoted_by_a_conditional_multipart_copy_never_by_copy_object,
    a_promote_onto_an_existing_blob_never_replaces_it,
    blob_and_audit_writes_carry_object_lock_retention_and_staging_does_not,
    an_events_file_above_one_part_is_uploaded_in_checked_parts_and_completed_conditionally,
    round_trips_per_route_are_counted_at_the_emulator_and_documented,
    a_batch_read_left_unprocessed_is_retried_and_never_read_as_absent,
    appends_from_two_instances_to_one_stream_stay_one_chain,
    the_verify_entry_alone_links_a_large_upload_step_after_step_each_next_step_put_on_the_bus,
    the_verify_entry_takes_over_a_dead_workers_lease_and_fails_when_the_bus_refuses_the_next_step,
    a_freeze_holds_an_unattended_verification_without_failing_and_a_resent_event_links_it,
    the_publish_binary_with_the_verify_entry_answers_step_events_until_linked,
);

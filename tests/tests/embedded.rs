//! Every contract and end-to-end case on the embedded backend: files, SQLite, a local P-256 key.

use helix_tests::Backend;

helix_tests::common_suite!(Backend::Embedded);

helix_tests::cases!(Backend::Embedded;
    embedded_data_dir_is_private_and_its_secret_files_are_0600,
    an_empty_presign_secret_refuses_to_start,
    a_batch_whose_links_do_not_commit_links_nothing_and_its_retry_links_each_once,
    governance_events_reach_a_webhook_that_is_down_slow_then_failing_and_no_decision_waits,
    a_notification_whose_attempts_are_spent_is_given_up_logged_counted_and_the_next_goes_on,
    concurrent_batches_of_the_same_digests_link_each_once_and_leave_nothing,
    forged_bytes_racing_the_true_ones_link_nothing,
    files_rewritten_during_a_push_register_consistent_content_or_fail_naming_them,
    batches_cut_off_or_starved_of_descriptors_leave_nothing_and_retry_cleanly,
    a_push_onto_a_version_registered_with_other_content_sends_nothing,
    a_batch_refused_in_the_middle_of_a_push_stops_it,
);

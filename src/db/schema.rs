// @generated-style diesel schema, kept by hand for both backends (see diesel.toml).

diesel::table! {
    teams (id) {
        id -> Text,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    projects (id) {
        id -> Text,
        team_id -> Text,
        name -> Text,
        description -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    integrations (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Text,
        provider_key -> Text,
        name -> Text,
        config -> Text,
        credentials_sealed -> Nullable<Text>,
        credentials_key_id -> Nullable<Text>,
        credential_fields -> Text,
        credentials_updated_at -> Nullable<Timestamp>,
        enabled -> Bool,
        status -> Text,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_check_at -> Nullable<Timestamp>,
        last_response_ms -> Nullable<BigInt>,
        consecutive_failures -> Integer,
        oauth_app_id -> Nullable<Text>,
        oauth_status -> Nullable<Text>,
        oauth_scopes -> Nullable<Text>,
        oauth_expires_at -> Nullable<Timestamp>,
        oauth_refreshed_at -> Nullable<Timestamp>,
        oauth_error -> Nullable<Text>,
        oauth_generation -> BigInt,
        template_id -> Nullable<Text>,
        template_version -> Nullable<Integer>,
    }
}

diesel::table! {
    integration_templates (id) {
        id -> Text,
        team_id -> Text,
        template_key -> Text,
        name -> Text,
        description -> Text,
        category -> Text,
        visibility -> Text,
        latest_version -> Integer,
        install_count -> BigInt,
        installed_from -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    integration_template_versions (template_id, version) {
        template_id -> Text,
        version -> Integer,
        document -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    oauth_apps (id) {
        id -> Text,
        team_id -> Text,
        provider_key -> Text,
        name -> Text,
        grant_type -> Text,
        client_id -> Text,
        client_secret_sealed -> Text,
        scopes -> Text,
        authorize_url -> Nullable<Text>,
        token_url -> Text,
        revoke_url -> Nullable<Text>,
        authorize_params -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    oauth_states (state_hash) {
        state_hash -> Text,
        team_id -> Text,
        integration_id -> Text,
        verifier_sealed -> Text,
        redirect_after -> Nullable<Text>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        team_id -> Text,
        name -> Text,
        public_id -> Text,
        key_hash -> Text,
        scopes -> Text,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        last_used_at -> Nullable<Timestamp>,
        usage_count -> BigInt,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        allowed_project_ids -> Nullable<Text>,
        allowed_integration_ids -> Nullable<Text>,
        rate_limit_requests -> Nullable<BigInt>,
        rate_limit_period_secs -> Nullable<BigInt>,
        rate_limit_burst -> Nullable<BigInt>,
        previous_key_hash -> Nullable<Text>,
        previous_key_expires_at -> Nullable<Timestamp>,
        updated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        team_id -> Text,
        actor -> Text,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        outcome -> Text,
        error_code -> Nullable<Text>,
        created_at -> Timestamp,
        request_id -> Nullable<Text>,
    }
}

diesel::joinable!(projects -> teams (team_id));
diesel::joinable!(integrations -> projects (project_id));
diesel::joinable!(api_keys -> teams (team_id));

diesel::table! {
    request_logs (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Text,
        integration_id -> Text,
        level -> Text,
        method -> Text,
        path -> Text,
        status -> Nullable<Integer>,
        duration_ms -> BigInt,
        bytes_in -> BigInt,
        bytes_out -> BigInt,
        error -> Nullable<Text>,
        actor -> Text,
        correlation_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    health_checks (id) {
        id -> Text,
        integration_id -> Text,
        ok -> Bool,
        status -> Nullable<Integer>,
        duration_ms -> BigInt,
        error -> Nullable<Text>,
        checked_at -> Timestamp,
    }
}

diesel::table! {
    sync_configs (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Text,
        name -> Text,
        source_integration_id -> Text,
        target_integration_id -> Text,
        direction -> Text,
        spec -> Text,
        schedule_secs -> Nullable<BigInt>,
        enabled -> Bool,
        last_run_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        run_on_webhook -> Text,
    }
}

diesel::table! {
    sync_runs (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Text,
        config_id -> Text,
        status -> Text,
        trigger -> Text,
        records_read -> BigInt,
        records_written -> BigInt,
        records_skipped -> BigInt,
        records_failed -> BigInt,
        error_samples -> Text,
        error -> Nullable<Text>,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        heartbeat_at -> Nullable<Timestamp>,
        attempts -> Integer,
    }
}

diesel::table! {
    job_leases (name) {
        name -> Text,
        holder -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    sync_records (config_id, record_key) {
        config_id -> Text,
        record_key -> Text,
        source_fp -> Nullable<Text>,
        target_fp -> Nullable<Text>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Nullable<Text>,
        url -> Text,
        description -> Text,
        event_types -> Text,
        integration_ids -> Text,
        headers_sealed -> Nullable<Text>,
        rate_limit_per_second -> Nullable<Integer>,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        secret_sealed -> Text,
        previous_secret_sealed -> Nullable<Text>,
        previous_secret_until -> Nullable<Timestamp>,
        failing_since -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Nullable<Text>,
        endpoint_id -> Text,
        event_type -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        claimed_until -> Nullable<Timestamp>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Text,
        delivery_id -> Text,
        endpoint_id -> Text,
        attempted_at -> Timestamp,
        response_status -> Nullable<Integer>,
        duration_ms -> BigInt,
        error -> Nullable<Text>,
        response_body -> Nullable<Text>,
    }
}

diesel::table! {
    inbound_webhooks (integration_id) {
        integration_id -> Text,
        team_id -> Text,
        token_hash -> Text,
        secret_sealed -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    inbound_webhook_events (id) {
        id -> Text,
        team_id -> Text,
        project_id -> Text,
        integration_id -> Text,
        provider -> Text,
        event_type -> Text,
        delivery_id -> Text,
        payload -> Text,
        received_at -> Timestamp,
    }
}

diesel::joinable!(audit_events -> teams (team_id));
diesel::joinable!(sync_runs -> sync_configs (config_id));
diesel::joinable!(request_logs -> integrations (integration_id));
diesel::joinable!(health_checks -> integrations (integration_id));

diesel::table! {
    data_versions (team_id) {
        team_id -> Text,
        version -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    teams,
    projects,
    integrations,
    api_keys,
    audit_events
);

diesel::allow_tables_to_appear_in_same_query!(integration_templates, integration_template_versions);

/*
 * minerwatch: other mining software (cpuminer family, xmr-stak) and
 * generic Stratum pool-protocol text.
 *
 * Written for minerwatch from /work/shared/SIGNALS.md sections 3, 4 and 6.
 * Compatible with YARA 4.2 and yara-x 1.x; no modules, so they also work
 * on raw memory blocks.
 */

rule miner_cpuminer_strings
{
    meta:
        category = "miner"
        description = "cpuminer user agent together with Stratum mining methods and pool URL scheme: this is a cpuminer-family CPU miner (minerd, cpuminer-multi, cpuminer-opt)"
        scope = "any"

    strings:
        $agent        = "cpuminer/" ascii
        $agent_multi  = "cpuminer-multi/" ascii
        $agent_opt    = "cpuminer-opt/" ascii
        $m_subscribe  = "mining.subscribe" ascii
        $m_authorize  = "mining.authorize" ascii
        $m_notify     = "mining.notify" ascii
        $m_submit     = "mining.submit" ascii
        $m_difficulty = "mining.set_difficulty" ascii
        $url_stratum  = "stratum+tcp://" ascii

    condition:
        any of ($agent*) and 3 of ($m_*, $url_stratum)
}

rule miner_xmr_stak_config
{
    meta:
        category = "miner"
        description = "xmr-stak configuration keys (pool_address, wallet_address, use_nicehash, ...): the xmr-stak CryptoNight/RandomX miner or its config file"
        scope = "any"

    strings:
        $name          = "xmr-stak" ascii nocase
        $k_pool_list   = "pool_list" ascii fullword
        $k_pool_addr   = "pool_address" ascii fullword
        $k_wallet      = "wallet_address" ascii fullword
        $k_pool_pass   = "pool_password" ascii fullword
        $k_nicehash    = "use_nicehash" ascii fullword
        $k_pool_weight = "pool_weight" ascii fullword
        $k_tls_fp      = "tls_fingerprint" ascii fullword
        $k_giveup      = "giveup_limit" ascii fullword
        $k_h_print     = "h_print_time" ascii fullword
        $k_aes         = "aes_override" ascii fullword
        $k_slow_mem    = "use_slow_memory" ascii fullword
        $k_tls_algo    = "tls_secure_algo" ascii fullword
        $k_motd        = "print_motd" ascii fullword
        $k_cpu_conf    = "cpu_threads_conf" ascii fullword
        $k_low_power   = "low_power_mode" ascii fullword

    condition:
        ($name and 3 of ($k_*)) or 6 of ($k_*)
}

rule stratum_pool_login
{
    meta:
        category = "stratum"
        description = "Stratum mining-pool JSON-RPC traffic or text (CryptoNote login/job/submit or Bitcoin-style mining.subscribe/authorize) with a pool URL: a miner talking to a pool"
        scope = "memory"

    strings:
        // CryptoNote (Monero) stratum, as XMRig and most Monero miners send it
        $cn_login   = /"method"[ ]?:[ ]?"login"/ ascii
        $cn_submit  = /"method"[ ]?:[ ]?"submit"/ ascii
        $cn_job     = /"method"[ ]?:[ ]?"job"/ ascii
        $cn_keep    = /"method"[ ]?:[ ]?"keepalived"/ ascii
        $cn_p_login = /"login"[ ]?:[ ]?"[48][1-9A-HJ-NP-Za-km-z]{94}/ ascii
        $cn_p_pass  = /"pass"[ ]?:[ ]?"/ ascii
        $cn_blob    = /"blob"[ ]?:[ ]?"[0-9a-f]{76}/ ascii
        $cn_seed    = /"seed_hash"[ ]?:[ ]?"[0-9a-f]{64}"/ ascii
        // Bitcoin-style stratum
        $btc_subscribe = /"method"[ ]?:[ ]?"mining\.subscribe"/ ascii
        $btc_authorize = /"method"[ ]?:[ ]?"mining\.authorize"/ ascii
        $btc_submit    = /"method"[ ]?:[ ]?"mining\.submit"/ ascii
        $btc_notify    = /"method"[ ]?:[ ]?"mining\.notify"/ ascii
        // pool URL schemes
        $url_tcp   = "stratum+tcp://" ascii
        $url_ssl   = "stratum+ssl://" ascii
        $url_tls   = "stratum+tls://" ascii
        $url_2tcp  = "stratum2+tcp://" ascii

    condition:
        ($cn_login and ($cn_p_login or ($cn_p_pass and any of ($url_*))))
        or (2 of ($cn_login, $cn_submit, $cn_job, $cn_keep) and ($cn_blob or $cn_seed))
        or (2 of ($btc_*) and any of ($url_*))
}

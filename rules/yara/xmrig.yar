/*
 * minerwatch: XMRig identity and XMRig pool-login / config text.
 *
 * Written for minerwatch from /work/shared/SIGNALS.md sections 3 and 4.
 * Compatible with YARA 4.2 and yara-x 1.x; no modules, so they also work
 * on raw memory blocks. Every rule needs several independent strings: a
 * single XMRig string (a man page, an IOC list, a security tool) is not
 * enough.
 */

rule xmrig_identity_strings
{
    meta:
        category = "xmrig"
        description = "XMRig log messages, option names and donation pools together with its algorithm ids: this is the XMRig miner or a fork of it"
        scope = "any"

    strings:
        // Strings from XMRig's own code: user agent, log lines.
        $core_agent_fmt  = "XMRig/%s" ascii
        $core_agent      = /XMRig\/[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}/ ascii
        $core_msr_fail   = "FAILED TO APPLY MSR MOD" ascii
        $core_dataset    = "dataset ready" ascii
        // Also found in IOC lists and hunting scripts: supporting only.
        $aux_msr_param   = "/sys/module/msr/parameters/allow_writes" ascii
        $aux_donate_opt  = "--donate-level" ascii
        $aux_donate_v2   = "donate.v2.xmrig.com" ascii
        $aux_donate_ssl  = "donate.ssl.xmrig.com" ascii
        // Algorithm ids (as NUL- or quote-delimited words).
        $algo_rx0        = "rx/0" ascii fullword
        $algo_rxwow      = "rx/wow" ascii fullword
        $algo_rxarq      = "rx/arq" ascii fullword
        $algo_rxsfx      = "rx/sfx" ascii fullword
        $algo_cnr        = "cn/r" ascii fullword
        $algo_cnheavy    = "cn-heavy" ascii fullword
        $algo_cnpico     = "cn-pico" ascii fullword
        $algo_chukwa     = "argon2/chukwa" ascii fullword
        $algo_chukwav2   = "argon2/chukwav2" ascii fullword

    condition:
        (2 of ($core_*) and (any of ($aux_*) or 2 of ($algo_*)))
        or (3 of ($core_*) and any of ($algo_*))
        or (1 of ($core_*) and 1 of ($aux_*) and 3 of ($algo_*))
}

rule stratum_xmrig_login_json
{
    meta:
        category = "stratum"
        description = "Stratum JSON-RPC login request sent by XMRig (method login with an XMRig agent string): an XMRig-based miner is logging in to a mining pool"
        scope = "memory"

    strings:
        $method_login = /"method"[ ]?:[ ]?"login"/ ascii
        $agent_xmrig  = /"agent"[ ]?:[ ]?"XMRig\// ascii
        $params_login = /"login"[ ]?:[ ]?"/ ascii
        $params_pass  = /"pass"[ ]?:[ ]?"/ ascii

    condition:
        $method_login and $agent_xmrig and ($params_login or $params_pass)
}

rule stratum_xmrig_config_json
{
    meta:
        category = "xmrig"
        description = "XMRig JSON configuration (donate-level, pools and randomx/cpu tuning keys): a config file or in-memory config for the XMRig miner"
        scope = "any"

    strings:
        $donate_level  = "\"donate-level\"" ascii
        $pools         = "\"pools\"" ascii
        $url_stratum   = /"url"[ ]?:[ ]?"stratum2?\+(tcp|ssl|tls):\/\// ascii
        $cfg_randomx   = "\"randomx\":" ascii
        $cfg_randomx_s = "\"randomx\" :" ascii
        $cfg_hugepages = "\"huge-pages\"" ascii
        $cfg_jit       = "\"huge-pages-jit\"" ascii
        $cfg_threads   = "\"max-threads-hint\"" ascii
        $cfg_1gb       = "\"1gb-pages\"" ascii
        $cfg_wrmsr     = "\"wrmsr\"" ascii
        $cfg_donproxy  = "\"donate-over-proxy\"" ascii
        $cfg_rigid     = "\"rig-id\"" ascii

    condition:
        // a pool section (or a stratum URL) together with XMRig tuning keys
        ((($donate_level and $pools) or $url_stratum) and 2 of ($cfg_*))
        or ($donate_level and 4 of ($cfg_*))
}

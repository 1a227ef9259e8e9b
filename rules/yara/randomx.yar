/*
 * minerwatch: RandomX engine rules.
 *
 * Written for minerwatch from the RandomX specification (librandomx-dev
 * specs.txt, sections 3 and 7.3) and /work/shared/SIGNALS.md section 3.
 * Compatible with YARA 4.2 and yara-x 1.x; no modules, so they also work
 * on raw memory blocks.
 *
 * All multi-byte integers are the little-endian in-memory form.
 */

rule randomx_engine_constants
{
    meta:
        category = "randomx"
        description = "RandomX Argon2 salt, AES generator keys and SuperscalarHash constants: this code contains a RandomX engine and can compute Monero proof-of-work (a miner, or a node such as monerod/p2pool)"
        scope = "any"

    strings:
        // Argon2d salts (RANDOMX_ARGON_SALT): Monero and known forks.
        $salt_monero   = { 52 61 6E 64 6F 6D 58 03 }                              // "RandomX\x03"
        $salt_wownero  = { 52 61 6E 64 6F 6D 57 4F 57 01 }                        // "RandomWOW\x01"
        $salt_arqma    = { 52 61 6E 64 6F 6D 41 52 51 01 }                        // "RandomARQ\x01"
        $salt_safex    = { 52 61 6E 64 6F 6D 53 46 58 01 }                        // "RandomSFX\x01"
        $salt_graft    = { 52 61 6E 64 6F 6D 58 2D 47 72 61 66 74 01 }            // "RandomX-Graft\x01"
        $salt_yadacoin = { 52 61 6E 64 6F 6D 58 59 61 64 61 43 6F 69 6E 03 }      // "RandomXYadaCoin\x03"

        // SuperscalarHash dataset-item register init constants (spec 7.3),
        // r1..r7 = r0 ^ K. The r0 multiplier 0x5851F42D4C957F2D is also the
        // PCG/Knuth LCG multiplier and is deliberately NOT used here.
        $ss_r1 = { FC A1 F5 59 8A 97 0A 81 }   // 0x810A978A59F5A1FC
        $ss_r2 = { 46 D8 C2 38 DF 99 70 A7 }   // 0xA77099DF38C2D846
        $ss_r3 = { 5C 49 22 BF 1C B9 26 81 }   // 0x8126B91CBF22495C
        $ss_r4 = { 62 8A 9F 17 97 25 4D 49 }   // 0x494D2597179F8A62
        $ss_r5 = { 0C EC AA CE B9 EF 37 92 }   // 0x9237EFB9CEAAEC0C
        $ss_r6 = { 78 2D E6 6C 74 56 2A 2F }   // 0x2F2A56746CE62D78
        $ss_r7 = { 4E E5 2C B6 F7 3B 85 84 }   // 0x84853BF7B62CE54E

        // AES round keys / states (spec 3.2-3.4), as bytes in memory.
        $aes_gen1r_key0 = { 53 A5 AC 6D 09 66 71 62 2B 55 B5 DB 17 49 F4 B4 }
        $aes_gen1r_key1 = { 07 AF 7C 6D 0D 71 6A 84 78 D3 25 17 4E DC A1 0D }
        $aes_gen1r_key2 = { F1 62 12 3F C6 7E 94 9F 4F 79 C0 F4 45 E3 20 3E }
        $aes_gen1r_key3 = { 35 81 EF 6A 7C 31 BA B1 88 4C 31 16 54 91 16 49 }
        $aes_gen4r_key0 = { DD AA 21 64 DB 3D 83 D1 2B 6D 54 2F 3F D2 E5 99 }
        $aes_gen4r_key1 = { 50 34 0E B2 55 3F 91 B6 53 9D F7 06 E5 CD DF A5 }
        $aes_gen4r_key4 = { 73 6F 82 B5 A6 A7 D6 E3 6D 8B 51 3D B4 FF 9E 22 }
        $aes_gen4r_key5 = { F3 6B 56 C7 D9 B3 10 9C 4E 4D 02 E9 D2 B7 72 B2 }
        $aes_hash1r_state0 = { 0D 2C B5 92 DE 56 A8 9F 47 DB 82 CC AD 3A 98 D7 }
        $aes_hash1r_state1 = { 6E 99 8D 33 98 B7 C7 15 5A 12 9E F5 57 80 E7 AC }
        $aes_hash1r_xkey0  = { 89 83 FA F6 9F 94 24 8B BF 56 DC 90 01 02 89 06 }
        $aes_hash1r_xkey1  = { D1 63 B2 61 3C E0 F4 51 C6 43 10 EE 9B F9 18 ED }

    condition:
        // Salt + SuperscalarHash, or AES keys + SuperscalarHash, or (for
        // builds where the superscalar constants were folded/obscured) a
        // salt with many AES keys. Every branch needs >= 4 independent
        // random-looking constants from different parts of the algorithm.
        (any of ($salt_*) and 3 of ($ss_*))
        or (2 of ($aes_*) and 3 of ($ss_*))
        or (any of ($salt_*) and 4 of ($aes_*))
}

rule randomx_jit_program_code
{
    meta:
        category = "randomx"
        description = "x86-64 RandomX program code as emitted by the RandomX JIT (eight cvtdq2pd scratchpad loads with the integer loads or the dataset mask): a RandomX VM is or was executing here"
        scope = "memory"

    strings:
        // cvtdq2pd xmm0..xmm7, qword ptr [rcx+0..56] (program loop, FP register load)
        $cvt_load = { F3 0F E6 01 F3 0F E6 49 08 F3 0F E6 51 10 F3 0F E6 59 18
                      F3 0F E6 61 20 F3 0F E6 69 28 F3 0F E6 71 30 F3 0F E6 79 38 }
        // and ecx, 0x7FFFFFC0 (RandomX 2 GiB dataset base mask, 64-byte aligned)
        $dataset_mask = { 81 E1 C0 FF FF 7F }
        // xor r8..r15, qword ptr [rcx+0..56] (program loop, integer register load)
        $xor_load = { 4C 33 01 4C 33 49 08 4C 33 51 10 4C 33 59 18
                      4C 33 61 20 4C 33 69 28 4C 33 71 30 4C 33 79 38 }

    condition:
        $cvt_load and ($dataset_mask or $xor_load)
}

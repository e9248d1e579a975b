/* scripts/mbedtls_config.h -- multigres-op's whole mbedTLS 3.6 configuration:
 * only what the operator uses (upstream's default enables ~150 options; see
 * <src>/include/mbedtls/mbedtls_config.h for what each one means). deps.sh
 * installs it as <prefix>/include/mbedtls/mgop_config.h and makes the
 * default mbedtls/mbedtls_config.h include it; editing it rebuilds the deps. */
#ifndef MGOP_MBEDTLS_CONFIG_H
#define MGOP_MBEDTLS_CONFIG_H

/* System. Threading stays off: one thread. */
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_HAVE_TIME
#define MBEDTLS_HAVE_TIME_DATE
#define MBEDTLS_PLATFORM_C
#define MBEDTLS_FS_IO                  /* tests read fixtures from files */
#define MBEDTLS_ERROR_C                /* mbedtls_strerror in log lines */
#define MBEDTLS_VERSION_C

/* Bounded heap: mbedtls_calloc/free over MGOP_TLS_HEAP_SIZE (section 1);
 * MEMORY_DEBUG only adds the counters behind the high-water metric. */
#define MBEDTLS_PLATFORM_MEMORY
#define MBEDTLS_MEMORY_BUFFER_ALLOC_C
#define MBEDTLS_MEMORY_DEBUG

/* Randomness: one CTR_DRBG seeded from getrandom() (deps.sh patch). */
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_CTR_DRBG_C
#define MBEDTLS_HMAC_DRBG_C            /* deterministic ECDSA */

/* Symmetric: AES-GCM and ChaCha20-Poly1305, the AEADs Go offers. */
#define MBEDTLS_CIPHER_C
#define MBEDTLS_AES_C
#define MBEDTLS_AESNI_C
#define MBEDTLS_GCM_C
#define MBEDTLS_CHACHA20_C
#define MBEDTLS_POLY1305_C
#define MBEDTLS_CHACHAPOLY_C

/* Hashes: SHA-1 (x509write key identifiers), SHA-256, SHA-384/512. */
#define MBEDTLS_MD_C
#define MBEDTLS_SHA1_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA384_C
#define MBEDTLS_SHA512_C

/* Public key: RSA verify/sign (API server CAs and kubeconfig client keys
 * are often RSA-2048+), ECDSA and ECDHE on P-256, P-384 and X25519. */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_RSA_C
#define MBEDTLS_PKCS1_V15
#define MBEDTLS_PKCS1_V21              /* RSA-PSS: TLS 1.3 signatures */
#define MBEDTLS_ECP_C
#define MBEDTLS_ECP_NIST_OPTIM
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_DP_SECP384R1_ENABLED
#define MBEDTLS_ECP_DP_CURVE25519_ENABLED
#define MBEDTLS_ECDH_C
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ECDSA_DETERMINISTIC
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C

/* Encodings and X.509: parse, verify, write certificates (PKI, 2.8). */
#define MBEDTLS_OID_C
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_BASE64_C
#define MBEDTLS_PEM_PARSE_C
#define MBEDTLS_PEM_WRITE_C
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT
#define MBEDTLS_X509_CREATE_C
#define MBEDTLS_X509_CRT_WRITE_C

/* TLS 1.2 and 1.3, client and server, ECDHE only. TLS 1.3 needs PSA
 * (psa_crypto_init at mgop_tls_global_init); its key slots grow from the
 * same bounded heap. No tickets, renegotiation, DTLS or PSK. */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_HKDF_C                 /* turns on PSA HKDF for TLS 1.3 */
#define MBEDTLS_PSA_KEY_STORE_DYNAMIC
#define MBEDTLS_NET_C                  /* error codes; tests' send/recv */
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_CLI_C
#define MBEDTLS_SSL_SRV_C
#define MBEDTLS_SSL_PROTO_TLS1_2
#define MBEDTLS_SSL_PROTO_TLS1_3
#define MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED
#define MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED
#define MBEDTLS_SSL_EXTENDED_MASTER_SECRET
#define MBEDTLS_SSL_SERVER_NAME_INDICATION
#define MBEDTLS_SSL_ALPN
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE
#define MBEDTLS_SSL_ALL_ALERT_MESSAGES
/* Go never negotiates smaller records, so input stays 16 KiB; what we send
 * (requests, webhook replies, our certificate chain) fits 4 KiB records. */
#define MBEDTLS_SSL_IN_CONTENT_LEN 16384
#define MBEDTLS_SSL_OUT_CONTENT_LEN 4096

#endif /* MGOP_MBEDTLS_CONFIG_H */

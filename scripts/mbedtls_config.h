/* scripts/mbedtls_config.h -- multigres-op's whole mbedTLS 3.6 configuration:
 * only what the operator uses (upstream's <src>/include/mbedtls/
 * mbedtls_config.h documents each option). deps.sh installs it as
 * <prefix>/include/mbedtls/mgop_config.h, makes mbedtls/mbedtls_config.h
 * include it, and rebuilds the libraries when it changes. */
#ifndef MGOP_MBEDTLS_CONFIG_H
#define MGOP_MBEDTLS_CONFIG_H
/* System: threads (the loop, the serving thread and the Lease thread share
 * the heap, the RNG and PSA's key store, which then lock), time, readable
 * errors in logs. */
#define MBEDTLS_THREADING_C
#define MBEDTLS_THREADING_PTHREAD
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_HAVE_TIME
#define MBEDTLS_HAVE_TIME_DATE
#define MBEDTLS_PLATFORM_C
#define MBEDTLS_ERROR_C
/* Bounded heap: mbedtls_calloc/free are set at start to a counter over
 * libc's that refuses past MGOP_TLS_HEAP_SIZE (2 MiB, section 1) and keeps
 * the high water for the metric. */
#define MBEDTLS_PLATFORM_MEMORY
/* Randomness: CTR_DRBG over getrandom() (deps.sh patch for musl). */
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_CTR_DRBG_C
#define MBEDTLS_HMAC_DRBG_C              /* deterministic ECDSA */
/* Record protection: AES-GCM, which every Go TLS peer offers. */
#define MBEDTLS_CIPHER_C
#define MBEDTLS_AES_C
#define MBEDTLS_AESNI_C
#define MBEDTLS_GCM_C
/* Hashes: SHA-1 (x509write key identifiers), SHA-256, SHA-384. */
#define MBEDTLS_MD_C
#define MBEDTLS_SHA1_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA384_C
#define MBEDTLS_SHA512_C
/* Keys: RSA (API server CAs and kubeconfig client keys, 2048+ bits, PSS for
 * TLS 1.3), ECDSA and ECDHE on P-256 (our PKI), P-384 and X25519. */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_RSA_C
#define MBEDTLS_PKCS1_V15
#define MBEDTLS_PKCS1_V21
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
/* Encodings and X.509: parse and verify; write certificates (PKI, 2.8). */
#define MBEDTLS_OID_C
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_BASE64_C
#define MBEDTLS_PEM_PARSE_C
#define MBEDTLS_PEM_WRITE_C
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT  /* offers rsa_pss_rsae: TLS 1.3, RSA certs */
#define MBEDTLS_X509_CREATE_C
#define MBEDTLS_X509_CRT_WRITE_C
/* TLS 1.2 and 1.3, client and server, ECDHE only: no external PSK,
 * renegotiation or DTLS. TLS 1.3 runs on PSA (psa_crypto_init in
 * mgop_tls_global_init; HKDF_C enables PSA's HKDF); key slots grow from the
 * bounded heap. Clients resume TLS 1.3 sessions from the server's tickets
 * (psk_dhe_ke: a fresh ECDHE, no certificate signed or verified on either
 * side); the webhook server issues none (no ticket callbacks). */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_PSA_KEY_STORE_DYNAMIC
#define MBEDTLS_HKDF_C
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_CLI_C
#define MBEDTLS_SSL_SRV_C
#define MBEDTLS_SSL_PROTO_TLS1_2
#define MBEDTLS_SSL_PROTO_TLS1_3
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_SESSION_TICKETS
#define MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE  /* Go peers expect it */
#define MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED
#define MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED
#define MBEDTLS_SSL_EXTENDED_MASTER_SECRET
#define MBEDTLS_SSL_SERVER_NAME_INDICATION
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE /* tests read the peer's serial */
#define MBEDTLS_SSL_ALL_ALERT_MESSAGES
/* Go never negotiates smaller records, so input stays 16 KiB; what we send
 * (requests, webhook replies, our certificate chain) fits 4 KiB records. */
#define MBEDTLS_SSL_IN_CONTENT_LEN 16384
#define MBEDTLS_SSL_OUT_CONTENT_LEN 4096
#endif /* MGOP_MBEDTLS_CONFIG_H */

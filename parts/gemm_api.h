/* gemm_api: in progress */

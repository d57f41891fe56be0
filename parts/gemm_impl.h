/* gemm_impl: in progress */

/* seq_impl: in progress */

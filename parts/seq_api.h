/* seq_api: in progress */

/* loss_api: in progress */

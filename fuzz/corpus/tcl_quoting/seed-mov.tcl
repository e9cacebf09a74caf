##AlfredToDo 3.0
Job -title {[IOM]ABC_0010 publish} -comment {mirror of iom graph ABC_0010_org_v001-d86486f4} -metadata {{"graph_id":"ABC_0010_org_v001-d86486f4","seq_type":"org","shot":"ABC_0010","version":1}} -projects demo -tags {iom publish} -priority 100.0 -service Linux64 -envkey {} -serialsubtasks 0 -subtasks {
  Task rm -id ABC_0010_org_v001-d86486f4.cleanup -cmds {
    RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.cleanup} -service iom_proxy
  } -subtasks {
    Task {sg version} -id ABC_0010_org_v001-d86486f4.register -cmds {
      RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.register} -service iom_proxy
    } -subtasks {
      Task {copy org} -id ABC_0010_org_v001-d86486f4.copy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.copy} -service iom_proxy
      } -subtasks {
        Task probe -id ABC_0010_org_v001-d86486f4.probe -cmds {
          RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.probe} -service iom_proxy
        }
      }
      Task thumbnail -id ABC_0010_org_v001-d86486f4.thumbnail -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.thumbnail} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_org_v001-d86486f4.copy
      }
      Task {render jpg} -id ABC_0010_org_v001-d86486f4.proxy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.proxy} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_org_v001-d86486f4.copy
      }
      Task {render mp4} -id ABC_0010_org_v001-d86486f4.review -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-d86486f4 --task ABC_0010_org_v001-d86486f4.review} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_org_v001-d86486f4.copy
      }
    }
  }
}

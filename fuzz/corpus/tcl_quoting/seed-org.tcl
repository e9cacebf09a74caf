##AlfredToDo 3.0
Job -title {[IOM]ABC_0010 publish} -comment {mirror of iom graph ABC_0010_org_v001-86931f1a} -metadata {{"graph_id":"ABC_0010_org_v001-86931f1a","seq_type":"org","shot":"ABC_0010","version":1}} -projects demo -tags {iom publish} -priority 100.0 -service Linux64 -envkey {} -serialsubtasks 0 -subtasks {
  Task rm -id ABC_0010_org_v001-86931f1a.cleanup -cmds {
    RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.cleanup} -service iom_proxy
  } -subtasks {
    Task {sg version} -id ABC_0010_org_v001-86931f1a.register -cmds {
      RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.register} -service iom_proxy
    } -subtasks {
      Task {copy org} -id ABC_0010_org_v001-86931f1a.copy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.copy} -service iom_proxy
      } -subtasks {
        Task probe -id ABC_0010_org_v001-86931f1a.probe -cmds {
          RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.probe} -service iom_proxy
        }
      }
      Task thumbnail -id ABC_0010_org_v001-86931f1a.thumbnail -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.thumbnail} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_org_v001-86931f1a.copy
      }
      Task {render jpg} -id ABC_0010_org_v001-86931f1a.proxy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.proxy} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_org_v001-86931f1a.copy
      }
      Task {render mp4} -id ABC_0010_org_v001-86931f1a.review -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_org_v001-86931f1a --task ABC_0010_org_v001-86931f1a.review} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_org_v001-86931f1a.copy
      }
    }
  }
}
